// Resumable photo uploads for the gallery page: files go in chunks, each with its SHA-256;
// a dropped connection retries, and a closed tab resumes where it stopped (the upload token of
// each file is remembered in localStorage until the file is complete).
"use strict";

(function () {
  const section = document.querySelector(".uploader");
  if (!section) return;
  document.getElementById("upload-nojs").hidden = true;

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

  async function uploadOne(file, view, progress) {
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
    const received = new Set(state.received);
    let done = 0;
    for (const index of received) {
      done += Math.min(state.chunk_size, file.size - index * state.chunk_size);
    }
    view.bar.value = done;
    progress(done);
    view.status.textContent = received.size ? "resuming" : "uploading";
    for (let index = 0; index < state.chunks; index++) {
      if (received.has(index)) continue;
      const piece = file.slice(index * state.chunk_size, (index + 1) * state.chunk_size);
      const buffer = await piece.arrayBuffer();
      const send = async () => call("PUT", `${api}/${encodeURIComponent(state.token)}/chunks/${index}`, {
        headers: { "Content-Type": "application/octet-stream", "X-Chunk-SHA256": await hex(buffer) },
        body: buffer,
      });
      try {
        await send();
      } catch (error) {
        // A chunk damaged on the way is worth one more try; anything else is final.
        if (!(error instanceof Refused && error.field === "chunk")) throw error;
        await send();
      }
      done += buffer.byteLength;
      view.bar.value = done;
      progress(buffer.byteLength);
    }
    view.status.textContent = "checking";
    // Never repeated automatically: a second "complete" could only be refused as a duplicate.
    let photo;
    try {
      photo = await call("POST", `${api}/${encodeURIComponent(state.token)}/complete`, {}, 0);
    } catch (error) {
      if (error instanceof Refused) throw error;
      throw new Error("The connection broke while the photo was being checked. Reload the page to see whether it arrived.");
    }
    localStorage.removeItem(remembered);
    view.status.textContent = photo.duplicate_of ? "done (the same file is already in this gallery)" : "done";
    view.item.classList.add("done");
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
    for (const file of files) {
      const view = row(file);
      try {
        await uploadOne(file, view, progress);
      } catch (error) {
        failed++;
        view.status.textContent = error.message;
        view.item.classList.add("failed");
      }
    }
    batchText.textContent = failed
      ? `${files.length - failed} of ${files.length} uploaded; see the messages above.`
      : `All ${files.length} uploaded.`;
    button.disabled = false;
    input.disabled = false;
    if (!failed) setTimeout(() => location.reload(), 800);
  });
})();
