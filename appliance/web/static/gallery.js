// The client's gallery: more photos as the client scrolls, a lightbox with keyboard and
// swipe, favourites without reloading, and fresh file URLs when the page outlives their five
// minutes. Without this script every tile links to a page of its own (with its own favourite
// button), "More photos" opens the next page, and the hearts on the tiles are not there.
// The page carries only the first photos' thumbnails; the lightbox fetches the other URLs of
// the whole gallery when it first opens, so a large gallery's page stays small.
"use strict";

(function () {
  const dataNode = document.getElementById("share-data");
  if (!dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  data.csrf = document.getElementById("share-csrf").dataset.csrf;
  data.urls = null;
  const listQuery = data.list ? "list=" + data.list : "";
  const box = document.getElementById("lightbox");
  const image = box.querySelector("img");
  const counter = box.querySelector(".lb-count");
  const favButton = box.querySelector(".lb-fav");
  const download = box.querySelector(".lb-download");
  const original = box.querySelector(".lb-original");
  const allTiles = () => Array.from(document.querySelectorAll(".tile"));
  const idOf = (tile) => Number(tile.id.slice(1));
  // The lightbox's order: the tiles on the page until the whole gallery's order arrives.
  let photos = allTiles().map(idOf);
  let names = allTiles().map((tile) => tile.querySelector("img").alt);
  const chosen = new Set(allTiles().filter((t) => t.classList.contains("chosen")).map(idOf));
  let current = -1;
  let opener = null;
  let refreshing = null;

  function getJson(path) {
    return fetch(data.base + path, { headers: { Accept: "application/json" } }).then(
      (response) => (response.ok ? response.json() : Promise.reject(response))
    );
  }

  // The URLs, order and names of every photo; fetched again when those on the page have
  // expired (after five minutes), then ``thumbs`` puts new thumbnail URLs into the grid.
  function refreshUrls(thumbs) {
    if (!refreshing) {
      refreshing = getJson("/urls" + (listQuery ? "?" + listQuery : ""))
        .then((fresh) => {
          data.urls = fresh.photos;
          photos = fresh.order;
          names = fresh.names;
          fresh.chosen.forEach((id) => chosen.add(id));
        })
        .finally(() => setTimeout(() => (refreshing = null), 10000));
    }
    return refreshing.then(() => {
      if (!thumbs) return;
      allTiles().forEach((tile) => {
        const img = tile.querySelector("img");
        const urls = data.urls[tile.id.slice(1)];
        if (urls && img.src !== new URL(urls.thumb, location.href).href) img.src = urls.thumb;
      });
    });
  }

  function watchThumbnail(img) {
    img.addEventListener("error", () => {
      if (!img.dataset.retried) {
        img.dataset.retried = "1";
        refreshUrls(true).catch(() => {});
      }
    });
  }

  // --- Favourites: the hearts post without leaving the page. ---
  function mark(photo, on) {
    const tile = document.getElementById("p" + photo);
    if (tile) {
      tile.classList.toggle("chosen", on);
      const button = tile.querySelector(".fav");
      if (button) button.setAttribute("aria-pressed", String(on));
    }
    if (on) chosen.add(photo);
    else chosen.delete(photo);
    if (favButton && photos[current] === photo) favButton.setAttribute("aria-pressed", String(on));
  }

  function toggle(photo) {
    if (!data.list) return;
    const on = !chosen.has(photo);
    mark(photo, on);
    fetch(data.base + "/lists/" + data.list + "/photos/" + photo, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": data.csrf },
      body: new URLSearchParams({ chosen: on ? "1" : "0" }),
    })
      .then((response) => (response.ok ? response.json() : Promise.reject(response)))
      .then((result) => {
        mark(photo, result.chosen);
        document
          .querySelectorAll('[data-list-count="' + data.list + '"], [data-list-tab="' + data.list + '"]')
          .forEach((count) => (count.textContent = result.count));
      })
      .catch(() => {
        mark(photo, !on);
        alert("The favourite could not be saved. Check the connection and try again.");
      });
  }

  // A tile gets its heart here; the link on it opens the lightbox.
  function setUpTile(tile) {
    const photo = idOf(tile);
    const img = tile.querySelector("img");
    watchThumbnail(img);
    tile.querySelector("a.open").addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return; // a new tab keeps working
      event.preventDefault();
      open(photo, event.currentTarget);
    });
    if (!data.list) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fav";
    button.textContent = "\u2665";
    button.setAttribute("aria-label", "Favourite: " + img.alt);
    button.setAttribute("aria-pressed", String(chosen.has(photo)));
    button.addEventListener("click", () => toggle(photo));
    tile.appendChild(button);
  }

  // --- More photos as the client scrolls. ---
  const more = document.getElementById("more");
  let loading = false;

  function addTiles(page) {
    const setNames = page.sets;
    page.tiles.forEach((item) => {
      const grids = document.querySelectorAll("ul.grid");
      let grid = grids[grids.length - 1];
      if (!grid || Number(grid.dataset.set) !== item.set) {
        if (data.multipleSets) {
          const heading = document.createElement("h2");
          heading.textContent = setNames[String(item.set)];
          more.before(heading);
        }
        grid = document.createElement("ul");
        grid.className = "grid";
        grid.dataset.set = String(item.set);
        more.before(grid);
      }
      const tile = document.createElement("li");
      tile.id = "p" + item.id;
      tile.className = item.chosen || chosen.has(item.id) ? "tile chosen" : "tile";
      if (item.chosen) chosen.add(item.id);
      const link = document.createElement("a");
      link.className = "open";
      link.href = data.base + "/p/" + item.id + (listQuery ? "?" + listQuery : "");
      const img = document.createElement("img");
      img.src = item.thumb;
      img.alt = item.name;
      img.loading = "lazy";
      link.appendChild(img);
      tile.appendChild(link);
      grid.appendChild(tile);
      setUpTile(tile);
    });
  }

  function loadMore() {
    const link = more && more.querySelector("a");
    if (!link || loading) return;
    loading = true;
    const page = link.dataset.page;
    getJson("/tiles?page=" + page + (listQuery ? "&" + listQuery : ""))
      .then((found) => {
        addTiles(found);
        if (found.next) {
          link.dataset.page = String(found.next);
          link.href = data.base + "?page=" + found.next + (listQuery ? "&" + listQuery : "");
        } else {
          more.remove();
        }
      })
      .catch(() => {
        link.textContent = "More photos could not be loaded. Try again.";
      })
      .finally(() => (loading = false));
  }

  if (more) {
    more.querySelector("a").addEventListener("click", (event) => {
      event.preventDefault();
      loadMore();
    });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver((seen) => {
        if (seen.some((entry) => entry.isIntersecting)) loadMore();
      }, { rootMargin: "800px" }).observe(more);
    }
  }

  // --- The lightbox. ---
  function show(index) {
    current = (index + photos.length) % photos.length;
    if (!data.urls) return; // still arriving; open() shows the photo when they are here
    const urls = data.urls[String(photos[current])] || {};
    image.src = urls.preview;
    image.alt = names[current];
    image.dataset.retried = "";
    counter.textContent = current + 1 + " / " + photos.length + " · " + names[current];
    const canDownload = data.downloads && urls.download;
    download.hidden = !canDownload;
    if (canDownload) download.href = urls.download;
    const canOriginal = data.downloads && urls.original;
    original.hidden = !canOriginal;
    if (canOriginal) original.href = urls.original;
    if (favButton) favButton.setAttribute("aria-pressed", String(chosen.has(photos[current])));
  }

  function open(photo, from) {
    opener = from;
    box.hidden = false;
    document.body.classList.add("lightbox-open");
    counter.textContent = "…";
    (data.urls ? Promise.resolve() : refreshUrls(false))
      .then(() => {
        if (!box.hidden) show(Math.max(photos.indexOf(photo), 0));
      })
      .catch(() => {
        counter.textContent = "The photo could not be loaded. Check the connection.";
      });
    box.querySelector(".lb-close").focus();
  }

  function close() {
    box.hidden = true;
    image.removeAttribute("src");
    document.body.classList.remove("lightbox-open");
    if (opener) opener.focus();
  }

  image.addEventListener("error", () => {
    if (box.hidden || image.dataset.retried) return;
    image.dataset.retried = "1";
    refreshUrls(true)
      .then(() => {
        image.src = (data.urls[String(photos[current])] || {}).preview;
      })
      .catch(() => {});
  });

  box.querySelector(".lb-close").addEventListener("click", close);
  box.querySelector(".lb-prev").addEventListener("click", () => show(current - 1));
  box.querySelector(".lb-next").addEventListener("click", () => show(current + 1));
  if (favButton) favButton.addEventListener("click", () => toggle(photos[current]));

  document.addEventListener("keydown", (event) => {
    if (box.hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowLeft") show(current - 1);
    else if (event.key === "ArrowRight") show(current + 1);
    else if ((event.key === "f" || event.key === "F") && favButton) toggle(photos[current]);
    else if (event.key === "Tab") {
      // Keep the focus inside the dialog while it is open.
      const focusable = Array.from(box.querySelectorAll("button, a[href]:not([hidden])"));
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    }
  });

  // Swipe: a mostly horizontal move of 50 px or more pages; a tap on the backdrop closes.
  let startX = null;
  let startY = null;
  box.addEventListener("pointerdown", (event) => {
    startX = event.clientX;
    startY = event.clientY;
  });
  box.addEventListener("pointerup", (event) => {
    if (startX === null) return;
    const dx = event.clientX - startX;
    const dy = event.clientY - startY;
    startX = null;
    if (Math.abs(dx) > 50 && Math.abs(dx) > Math.abs(dy)) show(dx < 0 ? current + 1 : current - 1);
    else if (event.target === box && Math.abs(dx) < 10 && Math.abs(dy) < 10) close();
  });

  allTiles().forEach(setUpTile);
})();
