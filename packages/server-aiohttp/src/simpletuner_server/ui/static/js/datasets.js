// Datasets: the folder list, a new-folder form, and one folder's page (?folder=<rel>): uploads with progress
// (images, captions and zip archives), a thumbnail grid with a full-size view, and caption editing.
// Everything shown comes from the JSON API and is set as text or attributes, never as markup.
import { $, ApiError, api, clear, clearFieldErrors, fmtBytes, h, markField, params, showError, toast, upload }
  from "./common.js";

const PAGE = 100; // images per request
const BATCH_FILES = 500; // files per /upload request (the server takes up to 10,000)
const BATCH_BYTES = 512 * 1024 * 1024; // bytes per /upload request (the server takes up to 4 GiB)
const folder = (params.folder || "").replace(/^\/+|\/+$/g, "");
const canUpload = params.upload === "1";

const enc = (path) => encodeURIComponent(path).replace(/%2F/g, "/");
const folderUrl = (path) => "/datasets?folder=" + enc(path);
const fileUrl = (path, size) => "/api/datasets/file?path=" + enc(path) + (size ? "&size=" + size : "");
const isZip = (file) => /\.zip$/i.test(file.name) || file.type === "application/zip";
let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

// --- new folder (top level in the list, a sub-folder inside a folder) ---------------------------------------

function setupNewFolder() {
  if (!canUpload) return;
  const card = $("#new-folder-card"), form = $("#new-folder-form");
  card.classList.remove("hidden");
  if (folder) {
    $("#new-folder-title").textContent = "New sub-folder";
    $("#folder-name-help").textContent = `Created inside ${folder}.`;
  } else {
    $("#folder-name-help").textContent = "A top-level dataset folder: you own it (only you and admins may " +
      "upload into it; everyone who may see datasets can read it).";
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFieldErrors(form);
    const input = form.elements.folder_name, name = input.value.trim();
    if (!name) {
      markField(input, "Give the folder a name.");
      input.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const made = await api("/api/datasets/folders", { method: "POST",
        json: { parent_path: folder || ".", folder_name: name } });
      toast(`Folder ${made.relative_path} created.`, "success");
      location.assign(folderUrl(made.relative_path));
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) markField(input, err.message);
      showError(err, (path) => (path === "folder_name" || path === "parent_path" ? input : null));
      button.disabled = false;
      input.focus();
    }
  });
}

// --- the folder list ----------------------------------------------------------------------------------------

async function showList() {
  $("#ds-list-view").classList.remove("hidden");
  try {
    const data = await api("/api/datasets");
    $("#ds-root").textContent = `Folder on the server: ${data.datasets_dir}`;
    const rows = data.datasets.map((d) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: folderUrl(d.path) }, d.name)),
      h("td.num", {}, d.images), h("td.num", {}, d.captions), h("td.num.opt", {}, d.other),
      h("td.num", {}, fmtBytes(d.bytes) + (d.truncated ? "+" : ""))));
    clear($("#ds-rows"), rows);
    $("#ds-table").classList.toggle("hidden", rows.length === 0);
    $("#ds-empty").classList.toggle("hidden", rows.length !== 0);
    if (!rows.length && canUpload) $("#ds-empty").textContent = "No dataset folders yet: create one below.";
    $("#ds-loading").remove();
  } catch (err) {
    $("#ds-loading").textContent = `Could not list the datasets: ${err.message}`;
    showError(err);
  }
}

// --- one folder ---------------------------------------------------------------------------------------------

function showCrumbs() {
  const parts = folder.split("/").filter(Boolean);
  const items = [h("li", {}, h("a", { href: "/datasets" }, "Datasets"))];
  parts.forEach((part, i) => {
    const path = parts.slice(0, i + 1).join("/");
    items.push(h("li", {}, i === parts.length - 1
      ? h("span", { "aria-current": "page" }, part) : h("a", { href: folderUrl(path) }, part)));
  });
  clear($("#ds-crumbs"), items);
  $("#folder-title").textContent = parts[parts.length - 1] || folder;
  document.title = `${folder} · Datasets · simpletuner`;
}

async function loadSubfolders() {
  try {
    const data = await api(`/api/datasets/files?path=${enc(folder)}&limit=1`);
    const list = $("#subfolders");
    clear(list, data.folders.map((name) => h("li", {},
      h("a", { href: folderUrl(`${data.path}/${name}`) }, `${name}/`))));
    $("#subfolders-box").classList.toggle("hidden", data.folders.length === 0);
  } catch { /* the image listing reports a missing folder */ }
}

// Caption editors, by image path: the grid's and the full-size view's stay in step.
const editors = new Map();

function forget(editor) {
  const set = editors.get(editor.item.path);
  set?.delete(editor);
  if (set && !set.size) editors.delete(editor.item.path);
}

function captionEditor(item) {
  const id = nextId("caption");
  const textarea = h("textarea", { id, rows: 3, maxlength: 100000, spellcheck: "true",
    "aria-describedby": id + "-state" });
  textarea.value = item.caption || "";
  const state = h("span.save-state#" + id + "-state", { role: "status" });
  const save = h("button.btn.small.primary", { type: "button" }, "Save");
  const editor = { item, textarea, state, save, dirty: false };
  const setState = (text, kind) => {
    state.textContent = text;
    state.className = "save-state" + (kind ? " " + kind : "");
  };
  editor.setState = setState;
  textarea.addEventListener("input", () => {
    editor.dirty = textarea.value !== (item.caption || "");
    setState(editor.dirty ? "Unsaved changes" : "", editor.dirty ? "dirty" : "");
  });
  const doSave = async () => {
    if (save.disabled) return;
    save.disabled = true;
    setState("Saving…", "");
    try {
      const saved = await api("/api/datasets/caption", { method: "PUT",
        json: { path: item.path, caption: textarea.value } });
      item.caption = saved.caption;
      item.caption_path = saved.caption_path;
      for (const other of editors.get(item.path) || []) {
        if (other !== editor) other.textarea.value = saved.caption;
        other.dirty = false;
        other.setState("Saved", "ok");
      }
      const img = document.querySelector(`img[data-path="${CSS.escape(item.path)}"]`);
      if (img) img.alt = saved.caption || item.name;
    } catch (err) {
      setState(`Not saved: ${err.message}`, "bad");
      showError(err);
    } finally {
      save.disabled = false;
    }
  };
  save.addEventListener("click", doSave);
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      doSave();
    }
  });
  if (!editors.has(item.path)) editors.set(item.path, new Set());
  editors.get(item.path).add(editor);
  editor.dispose = () => forget(editor);
  const el = h("div.field.caption-edit", {},
    h("label", { for: id }, "Caption", h("span.sr-only", {}, ` of ${item.name} (Ctrl+Enter saves)`)),
    textarea,
    h("div.row", {}, save, state));
  el.editor = editor;
  return el;
}

function captionText(item) {
  return item.caption
    ? h("p.caption-text", {}, item.caption)
    : h("p.caption-text.muted", {}, "No caption");
}

// The full-size view: a modal <dialog> (Esc closes it), with the caption editor.
const box = $("#image-box");
let boxEditor = null, boxOpener = null;
function openImage(item, opener) {
  boxOpener = opener;
  $("#image-box-title").textContent = item.name;
  const img = $("#image-box-img");
  img.alt = item.caption || item.name;
  img.src = fileUrl(item.path);
  boxEditor?.dispose?.();
  boxEditor = null;
  const holder = $("#image-box-caption");
  if (canUpload) {
    const editorEl = captionEditor(item);
    boxEditor = editorEl.editor;
    clear(holder, editorEl);
  } else {
    clear(holder, captionText(item));
  }
  box.showModal();
}
box.addEventListener("close", () => {
  boxEditor?.dispose?.();
  boxEditor = null;
  $("#image-box-img").removeAttribute("src");
  boxOpener?.focus();
});
box.addEventListener("click", (e) => { if (e.target === box) box.close(); }); // a click on the backdrop
$("#image-box-close").addEventListener("click", () => box.close());

function thumb(item) {
  const img = h("img", { loading: "lazy", src: fileUrl(item.path, 256), alt: item.caption || item.name,
    dataset: { path: item.path }, width: 256, height: 256 });
  const open = h("button.img", { type: "button", title: "View full size" }, img);
  open.setAttribute("aria-label", `View ${item.name} full size`);
  open.addEventListener("click", () => openImage(item, open));
  return h("li.thumb", { dataset: { path: item.path } },
    open,
    h("p.name.mono", { title: item.name }, item.name, h("span.muted", {}, ` · ${fmtBytes(item.size)}`)),
    canUpload ? captionEditor(item) : captionText(item));
}

const grid = { loaded: 0, generation: 0 };

async function loadImages(reset) {
  const generation = reset ? ++grid.generation : grid.generation;
  const offset = reset ? 0 : grid.loaded;
  const limit = reset ? Math.max(PAGE, grid.loaded) : PAGE;
  const more = $("#load-more"), status = $("#images-status");
  more.disabled = true;
  try {
    const data = await api(`/api/datasets/images?path=${enc(folder)}&offset=${offset}&limit=${limit}`);
    if (generation !== grid.generation) return; // a newer reload won
    // A reload (after an upload) keeps captions being typed, and the focus, in the rebuilt grid.
    const pending = new Map();
    let focused = null;
    if (reset) {
      for (const ed of [...editors.values()].flatMap((set) => [...set])) {
        if (ed === boxEditor) continue;
        if (ed.dirty) pending.set(ed.item.path, ed.textarea.value);
        if (document.activeElement === ed.textarea) {
          focused = { path: ed.item.path, start: ed.textarea.selectionStart, end: ed.textarea.selectionEnd };
        }
        forget(ed);
      }
      clear($("#ds-grid"));
      grid.loaded = 0;
    }
    $("#ds-grid").append(...data.items.map(thumb));
    for (const [path, set] of editors) {
      for (const ed of set) {
        if (ed === boxEditor) continue;
        if (pending.has(path)) {
          ed.textarea.value = pending.get(path);
          ed.dirty = true;
          ed.setState("Unsaved changes", "dirty");
        }
        if (focused && focused.path === path) {
          ed.textarea.focus();
          ed.textarea.setSelectionRange(focused.start, focused.end);
        }
      }
    }
    grid.loaded += data.items.length;
    status.textContent = data.total ? `Showing ${grid.loaded} of ${data.total} images.`
      : "No images in this folder yet." + (canUpload ? " Upload some above." : "");
    $("#folder-count").textContent = `${data.total} image${data.total === 1 ? "" : "s"}`;
    more.classList.toggle("hidden", grid.loaded >= data.total);
  } catch (err) {
    if (generation !== grid.generation) return;
    status.textContent = err.status === 404 ? "This folder does not exist." : `Could not list the images: ${err.message}`;
    if (err.status === 404) {
      $("#upload-card").classList.add("hidden");
      $("#new-folder-card").classList.add("hidden");
    }
    showError(err);
  } finally {
    more.disabled = false;
  }
}

// --- uploads ------------------------------------------------------------------------------------------------

let queue = Promise.resolve();
let queued = 0; // uploads waiting or under way
const changed = { images: false, folders: false }; // by the finished ones, shown once the queue is empty

function batches(files) {
  const out = [];
  let current = [], bytes = 0;
  for (const file of files) {
    if (current.length && (current.length >= BATCH_FILES || bytes + file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(file);
    bytes += file.size;
  }
  if (current.length) out.push(current);
  return out;
}

function describe(files) {
  if (files.length === 1) return files[0].name;
  const names = files.slice(0, 3).map((f) => f.name).join(", ");
  return `${files.length} files: ${names}${files.length > 3 ? ", …" : ""}`;
}

function uploadRow(label, bytes) {
  const bar = h("div");
  const progress = h("div.progress", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": 0, "aria-label": `Upload of ${label}` }, bar);
  const status = h("p.upload-status", {}, `Waiting… (${fmtBytes(bytes)})`);
  const details = h("ul.upload-details");
  const row = h("li.upload-item", {}, h("p.upload-name", {}, label), progress, status, details);
  $("#uploads").prepend(row);
  return {
    progress(loaded, total) {
      const pct = total ? Math.round((loaded / total) * 100) : 0;
      bar.style.width = pct + "%";
      progress.setAttribute("aria-valuenow", String(pct));
      status.textContent = pct >= 100 ? "Processing on the server…"
        : `Uploading… ${pct}% (${fmtBytes(loaded)} of ${fmtBytes(total)})`;
    },
    done(body, countKey) {
      bar.style.width = "100%";
      progress.setAttribute("aria-valuenow", "100");
      progress.classList.add("done");
      const written = body[countKey] || 0, skipped = body.skipped || [], errors = body.errors || [];
      const verb = countKey === "files_extracted" ? "Extracted" : "Uploaded";
      const parts = [`${verb} ${written} file${written === 1 ? "" : "s"}`];
      if (skipped.length) parts.push(`${skipped.length} skipped`);
      if (errors.length) parts.push(`${errors.length} refused`);
      status.textContent = parts.join(", ") + ".";
      status.className = "upload-status " + (errors.length ? "warn" : "ok");
      this.list(skipped, errors);
    },
    failed(err) {
      progress.classList.add("failed");
      status.textContent = `Failed: ${err.message}`;
      status.className = "upload-status bad";
      const body = err.body && typeof err.body === "object" ? err.body : {};
      this.list(body.skipped || [], body.errors || err.errors || []);
    },
    list(skipped, errors) {
      const line = (e, kind) => h("li." + kind, {}, h("span.mono", {}, e.file || e.path || "?"),
        ` — ${kind === "skipped" ? "skipped" : "refused"}: ${e.message}`);
      clear(details, errors.map((e) => line(e, "refused")), skipped.map((e) => line(e, "skipped")));
    },
  };
}

function send(path, form, row, countKey) {
  return upload(path, form, (loaded, total) => row.progress(loaded, total))
    .then((body) => {
      row.done(body, countKey);
      return true;
    })
    .catch((err) => {
      row.failed(err);
      return false;
    });
}

function handleFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const zips = files.filter(isZip), others = files.filter((f) => !isZip(f));
  const jobs = []; // {zip, run}: archives may add sub-folders, single files never do
  for (const group of batches(others)) {
    const row = uploadRow(describe(group), group.reduce((n, f) => n + f.size, 0));
    jobs.push({ zip: false, run: () => {
      const form = new FormData();
      form.append("target_path", folder);
      for (const file of group) form.append("files[]", file, file.name);
      return send("/api/datasets/upload", form, row, "files_uploaded");
    } });
  }
  for (const zip of zips) {
    const row = uploadRow(zip.name, zip.size);
    jobs.push({ zip: true, run: () => {
      const form = new FormData();
      form.append("target_path", folder);
      form.append("file", zip, zip.name);
      return send("/api/datasets/upload/zip", form, row, "files_extracted");
    } });
  }
  for (const job of jobs) {
    queued += 1;
    queue = queue.then(job.run).then((ok) => {
      changed.images ||= ok;
      changed.folders ||= ok && job.zip;
      queued -= 1;
      if (queued) return;
      if (changed.images) loadImages(true);
      if (changed.folders) loadSubfolders();
      changed.images = changed.folders = false;
    });
  }
}

function setupUpload() {
  if (!canUpload) return;
  $("#upload-card").classList.remove("hidden");
  const zone = $("#dropzone"), input = $("#upload-input");
  input.addEventListener("change", () => {
    handleFiles(input.files);
    input.value = "";
  });
  let depth = 0;
  zone.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth += 1;
    zone.classList.add("over");
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("over");
    handleFiles(e.dataTransfer && e.dataTransfer.files);
  });
  // A drop that misses the zone must not navigate away to the dropped file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => { if (!zone.contains(e.target)) e.preventDefault(); });
  }
}

function showFolder() {
  $("#ds-folder-view").classList.remove("hidden");
  showCrumbs();
  setupUpload();
  $("#load-more").addEventListener("click", () => loadImages(false));
  loadSubfolders();
  loadImages(true);
}

setupNewFolder();
if (folder) showFolder();
else showList();
