// The client's gallery: a lightbox with keyboard and swipe, favourites without reloading,
// and fresh file URLs when the page outlives their five minutes. Without this script every
// tile links to a page of its own (with its own favourite button) and the hearts stay hidden.
// The page carries only the thumbnails' URLs; the lightbox fetches the others when it first
// opens, so a large gallery's page stays small.
"use strict";

(function () {
  const dataNode = document.getElementById("share-data");
  if (!dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  data.csrf = document.getElementById("share-csrf").dataset.csrf;
  const tiles = Array.from(document.querySelectorAll(".tile"));
  const photos = tiles.map((tile) => Number(tile.id.slice(1)));
  const names = tiles.map((tile) => tile.querySelector("img").alt);
  data.urls = null;
  const box = document.getElementById("lightbox");
  const image = box.querySelector("img");
  const counter = box.querySelector(".lb-count");
  const favButton = box.querySelector(".lb-fav");
  const download = box.querySelector(".lb-download");
  const original = box.querySelector(".lb-original");
  const chosen = new Set(
    Array.from(document.querySelectorAll(".tile.chosen")).map((tile) => Number(tile.id.slice(1)))
  );
  let current = -1;
  let opener = null;
  let refreshing = null;

  // The URLs of every photo; also fetched again when those on the page have expired (after
  // five minutes), then ``thumbs`` puts the new thumbnail URLs into the grid.
  function refreshUrls(thumbs) {
    if (!refreshing) {
      refreshing = fetch(data.base + "/urls", { headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : Promise.reject(response)))
        .then((fresh) => {
          data.urls = fresh.photos;
        })
        .finally(() => setTimeout(() => (refreshing = null), 10000));
    }
    return refreshing.then(() => {
      if (!thumbs) return;
      tiles.forEach((tile) => {
        const img = tile.querySelector("img");
        const urls = data.urls[tile.id.slice(1)];
        if (urls && img.src !== new URL(urls.thumb, location.href).href) img.src = urls.thumb;
      });
    });
  }

  document.querySelectorAll(".tile img").forEach((img) => {
    img.addEventListener("error", () => {
      if (!img.dataset.retried) {
        img.dataset.retried = "1";
        refreshUrls(true).catch(() => {});
      }
    });
  });

  function urlsOf(index) {
    return (data.urls && data.urls[String(photos[index])]) || {};
  }

  function show(index) {
    current = (index + photos.length) % photos.length;
    if (!data.urls) return; // still arriving; open() shows the photo when they are here
    const urls = urlsOf(current);
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

  function open(index, from) {
    opener = from;
    box.hidden = false;
    document.body.classList.add("lightbox-open");
    current = index;
    counter.textContent = "…";
    (data.urls ? Promise.resolve() : refreshUrls(false))
      .then(() => {
        if (!box.hidden) show(current);
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
        image.src = urlsOf(current).preview;
      })
      .catch(() => {});
  });

  document.querySelectorAll("a.open").forEach((link) => {
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return; // a new tab keeps working
      event.preventDefault();
      open(photos.indexOf(Number(link.closest(".tile").id.slice(1))), link);
    });
  });
  box.querySelector(".lb-close").addEventListener("click", close);
  box.querySelector(".lb-prev").addEventListener("click", () => show(current - 1));
  box.querySelector(".lb-next").addEventListener("click", () => show(current + 1));

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

  // Favourites: the heart buttons post without leaving the page.
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
    const body = new URLSearchParams({ chosen: on ? "1" : "0" });
    fetch(data.base + "/lists/" + data.list + "/photos/" + photo, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": data.csrf },
      body: body,
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

  // The hearts on the tiles work only with this script, so it adds them (without it, each
  // photo's own page has a favourite button).
  if (data.list) {
    tiles.forEach((tile, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "fav";
      button.textContent = "\u2665";
      button.setAttribute("aria-label", "Favourite: " + names[index]);
      button.setAttribute("aria-pressed", String(tile.classList.contains("chosen")));
      button.addEventListener("click", () => toggle(photos[index]));
      tile.appendChild(button);
    });
  }
  if (favButton) favButton.addEventListener("click", () => toggle(photos[current]));
})();
