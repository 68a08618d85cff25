// The agent desktop: a thin page over the agent API (see /api/openapi.yaml). No framework,
// no build step; every value from an email is put into the page as text (textContent), and the
// email's HTML, already sanitized by the server, is shown in a sandboxed iframe without scripts.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("postroom.token");
let current = null;
let poll = null;

function status(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && path !== "/api/login") {
    showLogin();
    throw new Error("please log in again");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `request failed (${res.status})`);
  return data;
}

function requestId() {
  const a = new Uint8Array(12);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showLogin() {
  token = null;
  sessionStorage.removeItem("postroom.token");
  clearInterval(poll);
  $("login").hidden = false;
  $("desk").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
}

async function showDesk() {
  const me = await api("GET", "/api/me");
  $("login").hidden = true;
  $("desk").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${me.agent} @ ${me.tenant}`;
  $("supervisor").hidden = !me.supervisor;
  renderQueues(me);
  await refresh();
  clearInterval(poll);
  poll = setInterval(() => refresh().catch((e) => status(e.message, true)), 2000);
}

function renderQueues(me) {
  const box = $("queues");
  box.replaceChildren();
  const all = [...new Set([...(me.allowed || []), ...me.queues])];
  for (const q of all) {
    const label = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = me.queues.includes(q);
    cb.dataset.queue = q;
    cb.addEventListener("change", async () => {
      try {
        const r = await api("POST", cb.checked ? "/api/queues/login" : "/api/queues/logout", { queues: [q] });
        status(`queues: ${r.queues.join(", ") || "none"}`);
      } catch (e) {
        status(e.message, true);
      }
    });
    label.append(cb, ` ${q}`);
    box.append(label, document.createElement("br"));
  }
}

async function refresh() {
  const { sessions } = await api("GET", "/api/sessions");
  const list = $("sessions");
  list.replaceChildren();
  for (const s of sessions) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.dataset.session = s.id;
    if (s.id === current) b.className = "current";
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = s.state === "assigned" ? "new" : "open";
    const subject = document.createElement("div");
    subject.textContent = s.subject || "(no subject)";
    const from = document.createElement("small");
    from.textContent = s.from;
    b.append(state, subject, from);
    b.addEventListener("click", () => open(s.id, s.state).catch((e) => status(e.message, true)));
    li.append(b);
    list.append(li);
  }
  if (!$("supervisor").hidden) {
    const { queues } = await api("GET", "/api/supervisor/queues");
    const body = $("sv");
    body.replaceChildren();
    for (const q of queues) {
      const tr = document.createElement("tr");
      for (const v of [q.queue, q.waiting, q.oldestWaitingSeconds === null ? "–" : `${q.oldestWaitingSeconds} s`, q.agentsLoggedIn.join(", ")]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.append(td);
      }
      body.append(tr);
    }
  }
}

async function open(id, state) {
  if (state === "assigned") await api("POST", `/api/sessions/${id}/accept`, {});
  const data = await api("GET", `/api/sessions/${id}`);
  current = id;
  const e = data.email;
  $("email").hidden = false;
  $("subject").textContent = e.subject || "(no subject)";
  const dl = $("headers");
  dl.replaceChildren();
  for (const [k, v] of [["From", e.from], ["To", e.to.join(", ")], ["Cc", e.cc.join(", ")], ["Date", new Date(e.date).toLocaleString()]]) {
    if (!v) continue;
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  $("warnings").textContent = data.session.warnings.join(" ");
  const frame = $("html");
  if (e.html) {
    frame.hidden = false;
    frame.srcdoc = e.html;
    $("text").hidden = true;
  } else {
    frame.hidden = true;
    frame.srcdoc = "";
    $("text").hidden = false;
  }
  $("text").textContent = e.text;
  const att = $("attachments");
  att.replaceChildren();
  for (const a of e.attachments) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.textContent = `${a.name} (${a.size} bytes)`;
    b.addEventListener("click", () => download(a).catch((err) => status(err.message, true)));
    li.append(b);
    att.append(li);
  }
  for (const id2 of ["reply", "reply-all", "reply-text"]) $(id2).disabled = !data.campaign.mayAnswer;
  $("forward").disabled = !data.campaign.mayForward;
  await refresh();
}

async function download(a) {
  const res = await fetch(a.url, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`download failed (${res.status})`);
  const url = URL.createObjectURL(await res.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = a.name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function act(fn) {
  try {
    await fn();
  } catch (e) {
    status(e.message, true);
  }
}

function sendWith(kind, extra = {}) {
  return act(async () => {
    if (!current) return;
    const text = $("reply-text").value;
    const r = await api("POST", `/api/sessions/${current}/${kind}`, { text, requestId: requestId(), ...extra });
    status(`${kind} queued for sending (${r.commandId})`);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    act(async () => {
      $("login-error").textContent = "";
      try {
        const r = await api("POST", "/api/login", { tenant: f.get("tenant"), agent: f.get("agent"), password: f.get("password") });
        token = r.token;
        sessionStorage.setItem("postroom.token", token);
        await showDesk();
        status("logged in");
      } catch (e) {
        $("login-error").textContent = e.message;
      }
    });
  });
  $("queue-login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = ev.target.queue.value.trim();
    if (!q) return;
    act(async () => {
      await api("POST", "/api/queues/login", { queues: [q] });
      await showDesk();
    });
  });
  $("logout").addEventListener("click", () => act(async () => {
    await api("POST", "/api/logout", {});
    showLogin();
  }));
  $("reply").addEventListener("click", () => sendWith("reply"));
  $("reply-all").addEventListener("click", () => sendWith("reply-all"));
  $("forward").addEventListener("click", () => sendWith("forward", { to: $("forward-to").value.split(",").map((s) => s.trim()).filter(Boolean) }));
  $("transfer").addEventListener("click", () => act(async () => {
    const to = $("transfer-to").value.trim();
    if (!to || !current) return;
    await api("POST", `/api/sessions/${current}/transfer`, to.startsWith("queue:") ? { queue: to.slice(6) } : { agent: to });
    status("transferred");
    current = null;
    $("email").hidden = true;
    await refresh();
  }));
  $("close").addEventListener("click", () => act(async () => {
    if (!current) return;
    await api("POST", `/api/sessions/${current}/close`, { outcome: $("outcome").value });
    status("session closed");
    current = null;
    $("email").hidden = true;
    await refresh();
  }));
  if (token) showDesk().catch(() => showLogin());
});
