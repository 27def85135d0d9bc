// The t2i page: POST /generate and show the images; no framework, no network beyond this server.
"use strict";
const $ = (id) => document.getElementById(id);
let maxN = 64;

function errorText(body, status) {
  // FastAPI: {"detail": "text"} or {"detail": [{"msg": "..."}]} for schema errors (422).
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => String(e.msg || e).replace(/^Value error, /, "")).join("; ");
  return "request failed (HTTP " + status + ")";
}

function judgeText(judge) {
  // What the evaluation's attribute classifier reads, marked against what the caption states.
  const parts = Object.entries(judge.reads).map(([attr, value]) => {
    const name = attr.replace("_color", "").replace("_", " ");
    if (!(attr in judge.matches)) return name + ": " + value;
    const cls = judge.matches[attr] ? "ok" : "bad";
    return '<span class="' + cls + '">' + name + ": " + value + (judge.matches[attr] ? " ✓" : " ✗") + "</span>";
  });
  return "judge reads " + parts.join(", ");
}

function show(result) {
  const grid = $("grid");
  grid.textContent = "";
  for (const item of result.images) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + item.png;
    img.alt = item.caption + " #" + (item.index + 1);
    fig.appendChild(img);
    if (item.judge) {
      const cap = document.createElement("figcaption");
      cap.innerHTML = judgeText(item.judge);
      fig.appendChild(cap);
    }
    grid.appendChild(fig);
  }
}

async function generate() {
  const caption = $("caption").value;
  const n = Number($("n").value), seed = Number($("seed").value);
  $("status").className = "";
  $("status").textContent = "generating…";
  $("go").disabled = true;
  try {
    const resp = await fetch("/generate", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({caption: caption, n: n, seed: seed}),
    });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) throw new Error(errorText(body, resp.status));
    show(body);
    $("status").textContent = body.images.length + " image(s) of “" + body.captions[0] + "”, seed " + body.seed;
  } catch (err) {
    $("status").className = "error";
    $("status").textContent = err.message;
  } finally {
    $("go").disabled = false;
  }
}

async function offerSwap() {
  const caption = $("caption").value;
  const q = new URLSearchParams({caption: caption, n: $("n").value, seed: $("seed").value});
  $("png-link").href = "/generate.png?" + q.toString();
  if (!caption.trim()) { $("swap-row").hidden = true; return; }
  const resp = await fetch("/swap?" + new URLSearchParams({caption: caption}).toString());
  const body = resp.ok ? await resp.json() : {swapped: null};
  if ($("caption").value !== caption) return;  // typed on meanwhile
  $("swap-row").hidden = !body.swapped;
  $("swapped").textContent = body.swapped || "";
}

async function loadInfo() {
  const resp = await fetch("/info");
  if (!resp.ok) return;
  const info = await resp.json();
  maxN = info.max_n;
  $("n").max = String(maxN);
  $("model-info").textContent = info.resolution + " px generator, " + info.encoder + " text encoder" +
    (info.step != null ? ", step " + info.step : "") +
    (info.judge ? "; each image shows what the evaluation's judge reads" : "");
}

let swapTimer = null;
$("caption").addEventListener("input", () => { clearTimeout(swapTimer); swapTimer = setTimeout(offerSwap, 250); });
for (const id of ["n", "seed"]) $(id).addEventListener("change", offerSwap);
$("swap").addEventListener("click", () => { $("caption").value = $("swapped").textContent; offerSwap(); generate(); });
$("form").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
loadInfo();
offerSwap();
