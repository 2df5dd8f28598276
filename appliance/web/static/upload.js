// Resumable photo uploads for the gallery page: files go in chunks, each with its SHA-256;
// a dropped connection retries, and a closed tab resumes where it stopped (the upload token of
// each file is remembered in localStorage until the file is complete).
//
// Up to IN_FLIGHT chunks are on their way at once, across files: the server streams each
// chunk straight on to storage, so one chunk at a time would leave the line idle between
// them. The next file starts as soon as every chunk of the last one is on its way, while
// that one's last chunks and its "complete" are still being answered.
"use strict";

(function () {
  const section = document.querySelector(".uploader");
  if (!section) return;
  document.getElementById("upload-nojs").hidden = true;

  const IN_FLIGHT = 3;
  const gallery = section.dataset.gallery;
  const csrf = section.dataset.csrf;
  const input = document.getElementById("upload-files");
  const setSelect = document.getElementById("upload-set");
  const button = document.getElementById("upload-start");
  const list = section.querySelector(".upload-list");
  const batch = section.querySelector(".batch");
  const batchBar = document.getElementById("upload-batch");
  const batchText = document.getElementById("upload-batch-text");
  const api = `/api/v1/galleries/${gallery}/uploads`;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function hex(buffer) {
    const digest = await crypto.subtle.digest("SHA-256", buffer);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  class Refused extends Error {
    constructor(message, field) {
      super(message);
      this.field = field;
    }
  }

  // At most `count` holders at once; the others wait in turn.
  function slots(count) {
    let free = count;
    const waiting = [];
    return {
      take() {
        if (free > 0) {
          free--;
          return Promise.resolve();
        }
        return new Promise((resolve) => waiting.push(resolve));
      },
      give() {
        const next = waiting.shift();
        if (next) next();
        else free++;
      },
    };
  }

  // One request; network failures and 5xx answers are retried with growing pauses, a 4xx
  // answer is final and its message shown to the person.
  async function call(method, url, options = {}, retries = 8) {
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(url, {
          method,
          credentials: "same-origin",
          ...options,
          headers: { "X-CSRF-Token": csrf, Accept: "application/json", ...(options.headers || {}) },
        });
      } catch (error) {
        response = null; // offline, or the connection dropped
      }
      if (response && response.ok) return response.json();
      if (response && response.status >= 400 && response.status < 500) {
        let message = `Refused (${response.status}).`;
        let field = null;
        try {
          const body = await response.json();
          message = body.error || message;
          field = body.field || null;
        } catch (e) { /* not JSON */ }
        throw new Refused(message, field);
      }
      if (attempt >= retries) throw new Error("The server cannot be reached. Try again later.");
      await sleep(Math.min(1000 * 2 ** attempt, 30000));
    }
  }

  function row(file) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = file.size;
    bar.value = 0;
    bar.setAttribute("aria-label", `Progress of ${file.name}`);
    const status = document.createElement("span");
    status.className = "upload-status";
    status.textContent = "waiting";
    item.append(label, " ", bar, " ", status);
    list.append(item);
    return { item, bar, status };
  }

  // The upload of one file: started anew, or resumed from what the server already has.
  async function open(file) {
    const remembered = `upload:${gallery}:${setSelect.value}:${file.name}:${file.size}:${file.lastModified}`;
    let state = null;
    const token = localStorage.getItem(remembered);
    if (token) {
      try { state = await call("GET", `${api}/${encodeURIComponent(token)}`); } catch (e) { state = null; }
    }
    if (!state) {
      state = await call("POST", api, {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ filename: file.name, size: file.size, set_id: Number(setSelect.value) }),
      });
      localStorage.setItem(remembered, state.token);
    }
    return { remembered, state };
  }

  async function sendChunk(file, state, index) {
    const piece = file.slice(index * state.chunk_size, (index + 1) * state.chunk_size);
    const buffer = await piece.arrayBuffer();
    const checksum = await hex(buffer);
    const send = () => call("PUT", `${api}/${encodeURIComponent(state.token)}/chunks/${index}`, {
      headers: { "Content-Type": "application/octet-stream", "X-Chunk-SHA256": checksum },
      body: buffer,
    });
    try {
      await send();
    } catch (error) {
      // A chunk damaged on the way is worth one more try; anything else is final.
      if (!(error instanceof Refused && error.field === "chunk")) throw error;
      await send();
    }
    return buffer.byteLength;
  }

  // Hands each missing chunk of a file to the pool; resolves once all are on their way, with
  // a promise of the moment all have arrived (wrapped, so it is not awaited here).
  async function dispatch(file, state, missing, pool, arrived) {
    const sends = [];
    let failure = null;
    for (const index of missing) {
      await pool.take();
      if (failure) {
        pool.give();
        break;
      }
      sends.push(
        sendChunk(file, state, index)
          .then(arrived, (error) => { failure = failure || error; })
          .finally(() => pool.give()),
      );
    }
    const all = Promise.all(sends).then(() => { if (failure) throw failure; });
    return { all };
  }

  // Starts one file and sends its chunks; resolves, once every chunk is on its way, with a
  // promise of the file's end (its chunks arrived and the server made it a photo).
  async function uploadOne(file, view, progress, pool) {
    const { remembered, state } = await open(file);
    const sizeOf = (index) => Math.min(state.chunk_size, file.size - index * state.chunk_size);
    let done = 0;
    for (const index of state.received) done += sizeOf(index);
    view.bar.value = done;
    progress(done);
    view.status.textContent = state.received.length ? "resuming" : "uploading";
    const arrived = (bytes) => {
      done += bytes;
      view.bar.value = done;
      progress(bytes);
    };
    const missingOf = (received) => {
      const have = new Set(received);
      return Array.from({ length: state.chunks }, (_, index) => index).filter((i) => !have.has(i));
    };
    const first = await dispatch(file, state, missingOf(state.received), pool, arrived);

    const finish = async () => {
      await first.all;
      view.status.textContent = "checking";
      const complete = () => call("POST", `${api}/${encodeURIComponent(state.token)}/complete`, {}, 0);
      try {
        await complete();
      } catch (error) {
        // Chunks the server counts as missing (lost on its side) are sent once more;
        // any other refusal is final. "Complete" itself is never repeated blindly: a
        // second one could only be refused as already finished.
        if (!(error instanceof Refused)) {
          throw new Error("The connection broke while the photo was being checked. Reload the page to see whether it arrived.");
        }
        if (error.field !== "chunks") throw error;
        const now = await call("GET", `${api}/${encodeURIComponent(state.token)}`);
        const missing = missingOf(now.received);
        for (const index of missing) {
          done -= sizeOf(index);
          progress(-sizeOf(index));
        }
        view.status.textContent = "uploading";
        await (await dispatch(file, state, missing, pool, arrived)).all;
        view.status.textContent = "checking";
        await complete();
      }
      localStorage.removeItem(remembered);
      view.status.textContent = "done";
      view.item.classList.add("done");
    };
    return { end: finish() };
  }

  button.addEventListener("click", async () => {
    const files = Array.from(input.files || []);
    if (!files.length) {
      input.focus();
      return;
    }
    button.disabled = true;
    input.disabled = true;
    list.replaceChildren();
    batch.hidden = false;
    const total = files.reduce((sum, file) => sum + file.size, 0);
    let sent = 0;
    let failed = 0;
    const progress = (bytes) => {
      sent += bytes;
      batchBar.value = Math.round((100 * sent) / total);
      batchText.textContent = `${batchBar.value}%`;
    };
    const pool = slots(IN_FLIGHT);
    const fail = (view, error) => {
      failed++;
      view.status.textContent = error.message;
      view.item.classList.add("failed");
    };
    const ends = [];
    for (const file of files) {
      const view = row(file);
      try {
        const { end } = await uploadOne(file, view, progress, pool);
        ends.push(end.catch((error) => fail(view, error)));
      } catch (error) {
        fail(view, error);
      }
    }
    await Promise.all(ends);
    batchText.textContent = failed
      ? `${files.length - failed} of ${files.length} uploaded; see the messages above.`
      : `All ${files.length} uploaded.`;
    button.disabled = false;
    input.disabled = false;
    if (!failed) setTimeout(() => location.reload(), 800);
  });
})();
