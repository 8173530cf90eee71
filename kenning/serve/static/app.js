// Kenning's page: identify photos, confirm or correct, enrol, browse, curate and forget. Plain JS, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("kenning-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("kenning-token", tokenInput.value));

const results = []; // {name, result} per identified photo, in the order shown: what the CSV holds

function authorised() {
  // Sent with every request: a service started with --token-read wants it for reads too.
  return tokenInput.value ? { Authorization: `Bearer ${tokenInput.value}` } : {};
}

async function api(method, path, body, headers = {}) {
  const response = await fetch(path, { method, body, headers: { ...authorised(), ...headers } });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

async function showThumbnail(img, id) {
  // Fetched, not linked: an <img src> cannot carry the token that protected reads need.
  const response = await fetch(`/images/${id}/thumbnail`, { headers: authorised() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}

async function refreshStatus() {
  try {
    const health = await api("GET", "/health");
    $("#status").textContent = `${health.images} images in the catalogue`;
  } catch (err) {
    $("#status").textContent = `service unreachable: ${err.message}`;
  }
}

async function refreshLabels() {
  const data = await api("GET", "/identities?limit=1000");
  $("#labels").replaceChildren(...data.identities.map((i) => new Option(i.label)));
}

// -- identify --

function isImage(file) {
  return file.type.startsWith("image/") || /\.(jpe?g|png|webp|bmp|gif|tiff?)$/i.test(file.name);
}

async function identifyAll(files) {
  const photos = [...files].filter(isImage);
  for (const file of photos) await identifyOne(file); // one at a time: rows fill in as answers come
  $("#counts").textContent = `${results.length} photo(s) identified`;
  if ($("#as-encounter").checked && photos.length > 1) await identifyEncounter(photos);
}

// All the photos as one encounter (one animal, one time): one answer, from every photo together.
async function identifyEncounter(photos) {
  const form = new FormData();
  for (const file of photos) form.append("files", file, file.name);
  form.append("viewpoint", $("#viewpoint").value);
  form.append("encounter", "true");
  const shown = $("#encounter-answer");
  try {
    const data = await api("POST", "/identify", form);
    const answers = data.encounter.answers.slice(0, 3).map((a) => a.label);
    shown.textContent = `the ${photos.length} photos together: ${answers.join(", ")}`;
  } catch (err) {
    shown.textContent = `the photos together: ${err.message}`;
  }
}

async function identifyOne(file) {
  const row = $("#row-template").content.firstElementChild.cloneNode(true);
  const img = $(".photo img", row);
  img.src = URL.createObjectURL(file);
  $("figcaption", row).textContent = file.webkitRelativePath || file.name;
  $("#rows").prepend(row);
  $(".more-btn", row).onclick = () => ask(row, file, 20);  // a ranked list for a person to choose from
  await ask(row, file, 5);
}

async function ask(row, file, candidates) {
  const form = new FormData();
  form.append("files", file, file.name);
  form.append("viewpoint", $("#viewpoint").value);
  form.append("candidates", String(candidates));
  try {
    const data = await api("POST", "/identify", form);
    const result = data.results[0];
    if (result.error) throw new Error(result.error);
    if (candidates === 5) results.push({ name: file.name, result });
    showAnswers(row, file, result);
  } catch (err) {
    $(".answers", row).innerHTML = "";
    $(".answers", row).append(Object.assign(document.createElement("p"), { className: "error", textContent: err.message }));
  }
}

function showAnswers(row, file, result) {
  const box = $(".answers", row);
  box.replaceChildren();
  if (result.decision === "review") {  // between the sure-new and sure-match thresholds: a person decides
    box.append(Object.assign(document.createElement("p"), {
      className: "review",
      textContent: "For review: neither a sure match nor surely new. Compare the candidates below.",
    }));
  }
  result.answers.forEach((answer, rank) => {
    const line = document.createElement("div");
    line.className = "answer" + (answer.unknown ? " unknown" : "");
    const confidence = answer.confidence ?? 0;
    line.innerHTML = `<span>${rank + 1}.</span><span class="label"></span>
      <div class="bar" title="${answer.unknown ? "no gallery match above the threshold" : result.score}">
        <span style="width:${Math.round(Math.max(0, Math.min(1, confidence)) * 100)}%"></span></div>
      <span class="value">${answer.confidence === null ? "" : confidence.toFixed(3)}</span>
      <div class="nearest"></div>`;
    $(".label", line).textContent = answer.unknown ? `${answer.label} (no close match)` : answer.label;
    for (const near of answer.nearest) {
      const thumb = document.createElement("img");
      showThumbnail(thumb, near.id);
      thumb.alt = thumb.title = `${near.image_id}${near.similarity === null ? "" : ` (similarity ${near.similarity})`}`;
      $(".nearest", line).append(thumb);
    }
    box.append(line);
  });
  const first = result.answers.find((a) => !a.unknown);
  const confirm = $(".confirm", row);
  if (first) {
    confirm.disabled = false;
    confirm.textContent = `Confirm: ${first.label}`;
    confirm.onclick = () => enrol(row, file, first.label);
  }
  $(".choose-btn", row).onclick = () => enrol(row, file, $(".other", row).value.trim());
  $(".new-btn", row).onclick = () => enrol(row, file, $(".new-name", row).value.trim());
  if (result.matches) drawMatches($(".matches", row), $(".photo img", row), result.matches);
}

async function enrol(row, file, label) {
  const note = $(".note", row);
  note.className = "note";
  if (!label) {
    note.textContent = "type a label first";
    return;
  }
  const form = new FormData();
  form.append("files", file, file.name);
  form.append("viewpoint", $("#viewpoint").value);
  try {
    const data = await api("POST", `/identities/${encodeURIComponent(label)}/images`, form);
    const what = data.added.length ? `enrolled as ${data.label}` : `already enrolled as ${data.label}`;
    note.textContent = `${what}; the catalogue holds ${data.images} images`;
    row.classList.add("enrolled");
    refreshStatus();
    refreshLabels();
  } catch (err) {
    note.className = "note error";
    note.textContent = err.message;
  }
}

function drawMatches(canvas, queryImg, matches) {
  const gallery = new Image();
  gallery.onload = () => {
    const height = 200;
    const qw = Math.round((queryImg.naturalWidth / queryImg.naturalHeight) * height) || height;
    const gw = Math.round((gallery.naturalWidth / gallery.naturalHeight) * height) || height;
    canvas.width = qw + gw + 10;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(queryImg, 0, 0, qw, height);
    ctx.drawImage(gallery, qw + 10, 0, gw, height);
    ctx.lineWidth = 1;
    matches.lines.forEach(([qx, qy, gx, gy], i) => {
      ctx.strokeStyle = `hsl(${(i * 47) % 360}, 80%, 50%)`;
      ctx.beginPath();
      ctx.moveTo(qx * qw, qy * height);
      ctx.lineTo(qw + 10 + gx * gw, gy * height);
      ctx.stroke();
    });
    canvas.title = `${matches.total} matched keypoints with ${matches.label} (image ${matches.id})`;
    canvas.hidden = false;
  };
  if (queryImg.complete) showThumbnail(gallery, matches.id);
  else queryImg.onload = () => showThumbnail(gallery, matches.id);
}

function downloadCsv() {
  const format = $("#csv-format").value;
  // Kaggle's formats separate labels by whitespace: a label holding any cannot be read back as itself
  const used = results.flatMap(({ result }) => (format === "whale" ? result.answers : result.answers.slice(0, 1)));
  const spaced = [...new Set(used.map((a) => a.label).filter((label) => /\s/.test(label)))];
  if (spaced.length) {
    $("#counts").textContent = `no CSV: a Kaggle file cannot hold labels with spaces (${spaced.join(", ")})`;
    $("#counts").className = "error";
    return;
  }
  $("#counts").className = "";
  const lines = format === "whale" ? ["Image,Id"] : ["id,landmarks"];
  for (const { name, result } of [...results]) {
    if (format === "whale") {
      lines.push(`${name},${result.answers.map((a) => a.label).join(" ")}`);
    } else {
      const first = result.answers[0];
      const answer = !first || first.unknown ? "" : `${first.label} ${first.confidence.toFixed(4)}`;
      lines.push(`${name.replace(/\.[^.]+$/, "")},${answer}`);
    }
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.download = `kenning-${format}.csv`;
  link.click();
}

const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const files = [];
  const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (entries.length) for (const entry of entries) await collect(entry, files);
  else files.push(...e.dataTransfer.files);
  identifyAll(files);
});

async function collect(entry, out) {
  if (entry.isFile) {
    out.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await collect(child, out);
    }
  }
}

$("#files").addEventListener("change", (e) => identifyAll(e.target.files));
$("#folder").addEventListener("change", (e) => identifyAll(e.target.files));
$("#download").addEventListener("click", downloadCsv);
$("#clear").addEventListener("click", () => { results.length = 0; $("#rows").replaceChildren(); $("#counts").textContent = ""; });

// -- catalogue --

let offset = 0;
async function loadCatalogue(append = false) {
  offset = append ? offset : 0;
  const query = new URLSearchParams({ offset, limit: 50, search: $("#search").value });
  const data = await api("GET", `/identities?${query}`);
  const list = $("#identities");
  if (!append) list.replaceChildren();
  for (const identity of data.identities) {
    const item = document.createElement("div");
    item.className = "identity";
    item.innerHTML = `<input type="checkbox" class="pick" title="select to merge">
      <span class="name"></span><span class="count"></span><span class="thumbs"></span>
      <button type="button" class="photos-btn">Photos</button>
      <button type="button" class="rename">Rename</button>
      <button type="button" class="forget">Forget</button>
      <div class="photos" hidden><div class="all"></div>
        <input class="move-to" list="labels" placeholder="identity to move the selected photos to">
        <button type="button" class="move">Move selected photos</button></div>`;
    item.dataset.label = identity.label;
    $(".name", item).textContent = identity.label;
    $(".pick", item).onchange = updateMerge;
    $(".rename", item).onclick = () => renameIdentity(identity);
    $(".photos-btn", item).onclick = () => showPhotos(item, identity);
    $(".move", item).onclick = () => movePhotos(item, identity);
    $(".count", item).textContent = `${identity.images} image(s)`;
    for (const id of identity.ids) {
      const thumb = document.createElement("img");
      showThumbnail(thumb, id);
      thumb.alt = `image ${id}`;
      $(".thumbs", item).append(thumb);
    }
    $(".forget", item).onclick = async () => {
      if (!confirm(`Forget ${identity.label} and its ${identity.images} image(s)?`)) return;
      try {
        await api("DELETE", `/identities/${encodeURIComponent(identity.label)}`);
        item.remove();
        refreshStatus();
        refreshLabels();
      } catch (err) {
        alert(err.message);
      }
    };
    list.append(item);
  }
  offset += data.identities.length;
  $("#catalogue-count").textContent = `${data.total} identities`;
  $("#more").hidden = offset >= data.total;
  updateMerge();
  loadHistory().catch(() => {});
}
// -- curation: each change asks for a confirmation, then is one commit on the server --

async function curate(method, path, body, question) {
  if (!confirm(question)) return;
  const note = $("#curation-note");
  note.className = "note";
  try {
    const done = await api(method, path, JSON.stringify(body), { "Content-Type": "application/json" });
    note.textContent = `${done.operation}: ${done.moved} image(s) now ${done.into}`;
    await loadCatalogue();
    refreshLabels();
  } catch (err) {
    note.className = "note error";
    note.textContent = err.message;
  }
}

function renameIdentity(identity) {
  const to = (prompt(`New name for ${identity.label}`, identity.label) || "").trim();
  if (!to || to === identity.label) return;
  curate("PATCH", `/identities/${encodeURIComponent(identity.label)}`, { label: to },
    `Rename ${identity.label} (${identity.images} image(s)) to ${to}?`);
}

function picked() {
  return [...document.querySelectorAll(".identity .pick:checked")].map((box) => box.closest(".identity").dataset.label);
}

function updateMerge() {
  $("#merge").disabled = picked().length < 2;
}

$("#merge").addEventListener("click", () => {
  const labels = picked();
  const into = (prompt(`Label of the merged identity (${labels.join(", ")})`, labels[0]) || "").trim();
  if (!into) return;
  curate("POST", `/identities/${encodeURIComponent(labels[0])}/merge`, { labels: labels.slice(1), into },
    `Merge ${labels.join(", ")} into one identity, ${into}?`);
});

async function showPhotos(item, identity) {
  const panel = $(".photos", item);
  panel.hidden = !panel.hidden;
  if (panel.hidden) return;
  const data = await api("GET", `/identities/${encodeURIComponent(identity.label)}/images`);
  $(".all", panel).replaceChildren(...data.images.map((image) => {
    const thumb = document.createElement("img");
    showThumbnail(thumb, image.id);
    thumb.alt = thumb.title = image.image_id;
    thumb.dataset.id = image.id;
    thumb.onclick = () => thumb.classList.toggle("selected");
    return thumb;
  }));
}

function movePhotos(item, identity) {
  const ids = [...item.querySelectorAll(".photos img.selected")].map((img) => Number(img.dataset.id));
  const into = $(".move-to", item).value.trim();
  const note = $("#curation-note");
  if (!ids.length || !into) {
    note.className = "note error";
    note.textContent = "select photos (click them) and type the identity to move them to";
    return;
  }
  curate("POST", `/identities/${encodeURIComponent(identity.label)}/split`, { images: ids, into },
    `Move ${ids.length} photo(s) of ${identity.label} to ${into}?`);
}

async function loadHistory() {
  const data = await api("GET", "/history");
  $("#history ol").replaceChildren(...data.history.map((line) => {
    const into = line.into ? ` → ${line.into}` : "";
    return Object.assign(document.createElement("li"), {
      textContent: `${line.time} ${line.operation} ${line.labels.join(", ")}${into}: ${line.images} image(s)`,
    });
  }));
}

$("#search").addEventListener("input", () => loadCatalogue());
$("#more").addEventListener("click", () => loadCatalogue(true));

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== tab.dataset.view; });
    if (tab.dataset.view === "catalogue") loadCatalogue();
  });
}

refreshStatus();
refreshLabels().catch(() => {});
