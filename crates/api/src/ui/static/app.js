// MLX Model Hub admin UI: every action is a fetch to the JSON API; live parts poll it.
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

// A JSON API call. Throws an Error with the API's `{error:{message}}` on failure.
async function api(method, path, body, raw) {
  const headers = {};
  if (method !== "GET" && csrf()) headers["x-csrf-token"] = csrf();
  let payload;
  if (raw !== undefined) { payload = raw; headers["content-type"] = "application/x-ndjson"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["content-type"] = "application/json"; }
  const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const msg = data && data.error && data.error.message ? data.error.message : `${resp.status} ${resp.statusText}`;
    const e = new Error(msg); e.status = resp.status; e.body = data; throw e;
  }
  return data;
}

const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const enc = encodeURIComponent;
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

function say(el, text, ok) {
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("ok", ok === true);
  el.classList.toggle("err", ok === false);
  el.setAttribute("role", ok === false ? "alert" : "status");
}
const msgOf = (form) => $(".msg", form);

// Runs `fn` on submit with the button disabled; shows success or the API's error.
function onSubmit(form, fn) {
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const btn = $('button[type="submit"]', form);
    if (btn) btn.disabled = true;
    say(msgOf(form), "Working…");
    try {
      const done = await fn(new FormData(form));
      if (done) say(msgOf(form), done.text || done, true);
    } catch (e) {
      say(msgOf(form), e.message, false);
    } finally {
      if (btn) btn.disabled = false;
    }
  });
}

const fmtTime = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
const fmtBytes = (n) => { const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0; n = Number(n) || 0; while (n >= 1000 && i < 4) { n /= 1000; i++; } return i ? `${n.toFixed(1)} ${u[i]}` : `${n} B`; };
const reloadSoon = () => setTimeout(() => location.reload(), 600);

// Polls `fn` every `ms` while the page is visible; `fn` returns false to stop.
function poll(fn, ms) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    try { if (!document.hidden) again = (await fn()) !== false; } catch (_) { /* next tick */ }
    if (again) setTimeout(tick, ms); else stopped = true;
  };
  tick();
}

const pages = {};

pages.login = () => {
  const form = $("#login-form");
  onSubmit(form, async (fd) => {
    await api("POST", "/ui/login", { token: fd.get("token") });
    location.href = form.dataset.next || "/ui";
    return "Logged in";
  });
};

pages.models = () => {
  onSubmit($("#register-model"), async (fd) => {
    const name = fd.get("name").trim();
    try { await api("POST", "/api/models", { name }); }
    catch (e) { if (e.status !== 409) throw e; }
    const body = { path: fd.get("path").trim(), link: fd.get("link") === "on" };
    const alias = (fd.get("alias") || "").trim();
    if (alias) body.alias = alias;
    const v = await api("POST", `/api/models/${enc(name)}/versions`, body);
    setTimeout(() => { location.href = `/ui/models/${enc(name)}`; }, 700);
    return `Registered ${name} v${v.number} (${v.status})`;
  });
};

pages.model = () => {
  const name = $("main").dataset.model;
  onSubmit($("#set-alias"), async (fd) => {
    const alias = fd.get("alias").trim();
    await api("PUT", `/api/models/${name}/aliases/${enc(alias)}`, { version: Number(fd.get("version")) });
    reloadSoon();
    return `Alias ${alias} → v${fd.get("version")} set`;
  });
  onSubmit($("#set-tags"), async (fd) => {
    const tags = fd.get("tags").split(",").map((t) => t.trim()).filter(Boolean);
    await api("PATCH", `/api/models/${name}`, { tags });
    return "Tags saved";
  });
  $$("[data-remove-alias]").forEach((b) => b.addEventListener("click", async () => {
    const out = msgOf($("#set-alias"));
    try {
      await api("DELETE", `/api/models/${name}/aliases/${enc(b.dataset.removeAlias)}`);
      say(out, `Alias ${b.dataset.removeAlias} removed`, true);
      b.closest("li").remove();
    } catch (e) { say(out, e.message, false); }
  }));
};

pages.datasets = () => {
  onSubmit($("#register-dataset"), async (fd) => {
    const d = await api("POST", "/api/datasets", { name: fd.get("name").trim(), path: fd.get("path").trim(), description: fd.get("description") || "" });
    setTimeout(() => { location.href = `/ui/datasets/${enc(d.name)}`; }, 700);
    return `Registered ${d.name} v${d.version} (${d.format})`;
  });
  onSubmit($("#upload-dataset"), async (fd) => {
    const file = fd.get("file");
    if (!file || !file.size) throw new Error("choose a non-empty file");
    const name = fd.get("name").trim();
    const d = await api("POST", `/api/datasets/${enc(name)}/upload`, undefined, file);
    setTimeout(() => { location.href = `/ui/datasets/${enc(d.name)}`; }, 700);
    return `Uploaded ${d.name} v${d.version}: ${Object.entries(d.splits).map(([k, n]) => `${k} ${n} rows`).join(", ")}`;
  });
};

pages.dataset = () => {
  const main = $("main");
  const show = async () => {
    const split = $("#pv-split").value;
    const out = $("#preview-msg");
    try {
      const p = await api("GET", `/api/datasets/${main.dataset.dataset}/preview?split=${enc(split)}&limit=10&version=${main.dataset.version}`);
      $("#preview tbody").innerHTML = p.data.map((r) => `<tr><td>${r.line}</td><td><code class="wrap">${esc(JSON.stringify(r.row))}</code></td></tr>`).join("")
        || '<tr><td colspan="2" class="empty">No rows.</td></tr>';
      say(out, `${p.data.length} of ${p.rows_in_split} rows of ${split}`, true);
    } catch (e) { say(out, e.message, false); }
  };
  $("#preview-form").addEventListener("submit", (ev) => { ev.preventDefault(); show(); });
  show();
};

async function cancelJob(id, out) {
  try {
    const j = await api("POST", `/api/jobs/${id}/cancel`);
    say(out, `Job #${id}: ${j.state === "cancelled" ? "cancelled" : "cancel requested"}`, true);
  } catch (e) { say(out, e.message, false); }
}

function jobRow(j) {
  const pct = Math.round((j.progress || 0) * 100);
  const c = j.config || {};
  let what = c.base_model ? `${c.base_model}${c.base_version ? " v" + c.base_version : ""}` : "";
  if (c.dataset) what += ` on ${c.dataset}${c.dataset_version ? " v" + c.dataset_version : ""}`;
  const live = !["succeeded", "failed", "cancelled"].includes(j.state);
  return `<tr data-job="${j.id}"><td><a href="/ui/jobs/${j.id}">#${j.id}</a></td><td>${esc(j.kind)}</td><td>${esc(what)}</td>` +
    `<td><span class="state state-${esc(j.state)}">${esc(j.state)}</span></td>` +
    `<td><progress max="100" value="${pct}" aria-label="progress of job ${j.id}">${pct}%</progress> ${pct}%</td>` +
    `<td>${fmtTime(j.created_at_ms)}</td><td>${live ? `<button type="button" class="small" data-cancel="${j.id}">Cancel</button>` : ""}</td></tr>`;
}

pages.jobs = () => {
  const state = $("main").dataset.state;
  const out = $("#jobs-msg");
  $("#jobs-table").addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-cancel]");
    if (b) cancelJob(b.dataset.cancel, out);
  });
  poll(async () => {
    const list = await api("GET", `/api/jobs?limit=200${state ? "&state=" + enc(state) : ""}`);
    $("#jobs-table tbody").innerHTML = list.data.map(jobRow).join("") || '<tr><td colspan="7" class="empty">No jobs.</td></tr>';
  }, 1000);
  const form = $("#start-job");
  onSubmit(form, async (fd) => {
    const config = {};
    $$("[data-num]", form).forEach((i) => { if (!i.name.startsWith("lora_")) config[i.name] = Number(i.value); });
    config.fine_tune_type = fd.get("fine_tune_type");
    config.mask_prompt = fd.get("mask_prompt") === "on";
    config.lora_parameters = { rank: Number(fd.get("lora_rank")), scale: Number(fd.get("lora_scale")) };
    const j = await api("POST", "/api/jobs", { base_model: fd.get("base_model"), base_version: fd.get("base_version").trim(), dataset: fd.get("dataset"), config });
    const m = msgOf(form);
    setTimeout(() => { m.innerHTML = `Started <a href="/ui/jobs/${j.id}">job #${j.id}</a> (${esc(j.state)})`; }, 0);
    return `Started job #${j.id} (${j.state})`;
  });
};

// The mlx-lm style log lines from a run's metrics.
function logLines(metrics) {
  const by = {};
  for (const [k, pts] of Object.entries(metrics)) for (const p of pts) (by[p.step] = by[p.step] || {})[k] = p.value;
  const f = (v, d) => (v == null ? "?" : Number(v).toFixed(d));
  const lines = [];
  for (const step of Object.keys(by).map(Number).sort((a, b) => a - b)) {
    const m = by[step];
    if (m.val_loss != null) lines.push(`Iter ${step}: Val loss ${f(m.val_loss, 3)}, Val took ${f(m.val_time, 3)}s`);
    if (m.train_loss != null) lines.push(`Iter ${step}: Train loss ${f(m.train_loss, 3)}, Learning Rate ${Number(m.learning_rate).toExponential(3)}, It/sec ${f(m.iterations_per_second, 3)}, Tokens/sec ${f(m.tokens_per_second, 3)}, Trained Tokens ${m.trained_tokens}, Peak mem ${f(m.peak_memory_gb, 3)} GB`);
  }
  return lines;
}

function refreshCharts(root, run) {
  const keys = root.dataset.keys.split(",");
  if (!root.children.length) {
    root.innerHTML = keys.map((k) => `<figure><img class="chart" data-key="${k}" alt="${k.replace(/_/g, " ")} by step, run ${run}" width="640" height="320"></figure>`).join("");
  }
  const t = Date.now();
  $$("img.chart", root).forEach((img) => { img.src = `/ui/runs/${run}/charts/${img.dataset.key}.svg?t=${t}`; });
}

pages.job = () => {
  const main = $("main");
  const id = main.dataset.job;
  let run = Number(main.dataset.run) || 0;
  $("#cancel-job").addEventListener("click", () => cancelJob(id, $("#job-msg")));
  let last = "";
  poll(async () => {
    const j = await api("GET", `/api/jobs/${id}`);
    const st = $("#job-state");
    st.textContent = j.state; st.className = `state state-${j.state}`;
    const pct = Math.round((j.progress || 0) * 100);
    $("#job-progress").value = pct; $("#job-progress-text").textContent = `${pct}%`;
    const err = $("#job-error");
    err.hidden = !j.error; err.textContent = j.error || "";
    const done = ["succeeded", "failed", "cancelled"].includes(j.state);
    $("#cancel-job").hidden = done;
    if (j.runs && j.runs.length) {
      const r = j.runs[j.runs.length - 1].id;
      if (r !== run) { run = r; $("#job-run").innerHTML = `<a href="/ui/runs/${r}">run #${r}</a>`; }
    }
    if (run) {
      const m = await api("GET", `/api/runs/${run}/metrics`);
      const lines = logLines(m.metrics);
      if (done) lines.push(`Job ${j.state}${j.error ? ": " + j.error : ""}`);
      const text = lines.join("\n");
      if (text && text !== last) { last = text; const log = $("#job-log"); log.textContent = text; log.scrollTop = log.scrollHeight; refreshCharts($("#job-charts"), run); }
    }
    if (j.result_version_id && done) {
      const res = $("#job-result");
      if (!res.textContent.trim()) res.textContent = `version id ${j.result_version_id}`;
    }
    return !done;
  }, 1000);
};

pages.run = () => {
  const main = $("main");
  if (main.dataset.status !== "running") return;
  const id = main.dataset.run;
  poll(async () => {
    const r = await api("GET", `/api/runs/${id}`);
    const t = Date.now();
    $$("img.chart").forEach((img) => { img.src = `/ui/runs/${id}/charts/${img.dataset.key}.svg?t=${t}`; });
    const s = $("#run-status"); s.textContent = r.status; s.className = `state state-${r.status}`;
    return r.status === "running";
  }, 2000);
};

pages.runs = () => {
  const form = $("#compare-form");
  form.addEventListener("submit", (ev) => {
    const ids = $$("input.pick:checked").map((c) => c.value);
    if (!ids.length) { ev.preventDefault(); say(msgOf(form), "Check at least one run", false); return; }
    $("#compare-runs").value = ids.join(",");
  });
};

pages.playground = () => {
  const form = $("#chat-form");
  const log = $("#chat-log");
  const stats = $("#chat-stats");
  let history = [];
  let ctrl = null;
  const turn = (role, text) => {
    const d = document.createElement("div");
    d.className = `turn ${role}`;
    d.innerHTML = `<span class="who">${role === "user" ? "You" : "Model"}</span><span class="text"></span>`;
    $(".text", d).textContent = text;
    log.appendChild(d); log.scrollTop = log.scrollHeight;
    return $(".text", d);
  };
  $("#pg-clear").addEventListener("click", () => { history = []; log.innerHTML = ""; stats.textContent = ""; });
  $("#pg-stop").addEventListener("click", () => { if (ctrl) ctrl.abort(); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const out = msgOf(form);
    const prompt = fd.get("prompt").trim();
    if (!prompt) return;
    const messages = [];
    if (fd.get("system").trim()) messages.push({ role: "system", content: fd.get("system").trim() });
    history.push({ role: "user", content: prompt });
    turn("user", prompt);
    $("#pg-prompt").value = "";
    const el = turn("assistant", "");
    const body = { model: fd.get("model"), messages: messages.concat(history), stream: true, stream_options: { include_usage: true },
      temperature: Number(fd.get("temperature")), top_p: Number(fd.get("top_p")), max_tokens: Number(fd.get("max_tokens")) };
    ctrl = new AbortController();
    $("#pg-send").disabled = true; $("#pg-stop").disabled = false;
    say(out, "Generating…");
    const t0 = performance.now();
    let tFirst = 0, chunks = 0, usage = null, text = "", finish = "";
    try {
      const headers = { "content-type": "application/json" };
      if (csrf()) headers["x-csrf-token"] = csrf();
      const resp = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal: ctrl.signal });
      if (!resp.ok) {
        let msg = `${resp.status}`;
        try { const e = await resp.json(); msg = e.error.message; } catch (_) { /* keep the status */ }
        throw new Error(msg);
      }
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, i); buf = buf.slice(i + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const c = JSON.parse(data);
            if (c.error) throw new Error(c.error.message || "generation failed");
            if (c.usage) usage = c.usage;
            for (const ch of c.choices || []) {
              const delta = (ch.delta && ch.delta.content) || "";
              if (delta) { if (!tFirst) tFirst = performance.now(); chunks++; text += delta; el.textContent = text; log.scrollTop = log.scrollHeight; }
              if (ch.finish_reason) finish = ch.finish_reason;
            }
          }
        }
      }
      history.push({ role: "assistant", content: text });
      const tEnd = performance.now();
      const n = usage ? usage.completion_tokens : chunks;
      const ttft = tFirst ? tFirst - t0 : tEnd - t0;
      const rate = tFirst && n > 1 ? (n - 1) / ((tEnd - tFirst) / 1000) : 0;
      stats.textContent = `${n} tokens · TTFT ${ttft.toFixed(0)} ms · ${rate.toFixed(1)} tokens/s · finish: ${finish || "?"}`;
      stats.dataset.tokens = n;
      say(out, "Done", true);
    } catch (e) {
      if (e.name === "AbortError") { history.push({ role: "assistant", content: text }); say(out, "Stopped", true); }
      else { history.pop(); el.parentElement.remove(); say(out, e.message, false); }
    } finally {
      ctrl = null; $("#pg-send").disabled = false; $("#pg-stop").disabled = true;
    }
  });
};

pages.system = () => {
  const out = $("#ps-msg");
  const tbody = $("#ps-table tbody");
  tbody.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-unload]");
    if (!b) return;
    b.disabled = true;
    try {
      const r = await api("POST", `/api/models/${enc(b.dataset.unload)}/unload`);
      say(out, r.unloaded ? `Unloaded ${b.dataset.unload}` : `${b.dataset.unload} was not loaded`, true);
    } catch (e) { say(out, e.message, false); b.disabled = false; }
  });
  poll(async () => {
    const ps = await api("GET", "/api/ps");
    tbody.innerHTML = ps.models.map((m) => `<tr><td>${esc(m.model)}${m.base_model ? `<div class="sub">adapter over ${esc(m.base_model)}</div>` : ""}</td>` +
      `<td>${esc(m.weights)}</td><td>${fmtBytes(m.size_bytes)}</td><td>${fmtTime(m.loaded_at_ms)}</td>` +
      `<td>${m.expires_at_ms ? fmtTime(m.expires_at_ms) : "busy or never"}</td><td>${m.active_requests}</td>` +
      `<td><button type="button" class="small" data-unload="${esc(m.model)}">Unload</button></td></tr>`).join("")
      || '<tr><td colspan="7" class="empty">No model is loaded.</td></tr>';
  }, 2000);
};

document.addEventListener("DOMContentLoaded", () => {
  const lo = $("#logout");
  if (lo) lo.addEventListener("click", async () => { try { await api("POST", "/ui/logout"); } finally { location.href = "/ui/login"; } });
  const main = $("main");
  const init = main && pages[main.dataset.page];
  if (init) init();
});
