// The agent desktop: a thin page over the agent API (see /api/openapi.yaml). No framework,
// no build step; every value from an email is put into the page as text (textContent), and the
// email's HTML, already sanitized by the server, is shown in a sandboxed iframe without scripts.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("postroom.token");
let current = null;
let poll = null;
// Where Reply / Reply all go, as the server proposes them (replyTargets), and whether the agent
// changed the To/Cc fields: changed fields are sent as they are, untouched ones let the server
// apply the same rule it showed.
let targets = null;
let recipientsEdited = false;

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
  $("logout-everywhere").hidden = true;
  $("who").textContent = "";
}

async function showDesk() {
  const me = await api("GET", "/api/me");
  $("login").hidden = true;
  $("desk").hidden = false;
  $("logout").hidden = false;
  $("logout-everywhere").hidden = false;
  $("who").textContent = `${me.agent} @ ${me.tenant}`;
  $("supervisor").hidden = !me.supervisor;
  renderQueues(me);
  await refresh();
  clearInterval(poll);
  poll = setInterval(() => {
    refresh().catch((e) => status(e.message, true));
    if (current) refreshReplies().catch((e) => status(e.message, true));
  }, 2000);
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
    const { queues, acd } = await api("GET", "/api/supervisor/queues");
    if (acd) {
      const u = acd.unanswered;
      const oldest = u.oldestAt ? Math.round((Date.now() - Date.parse(u.oldestAt)) / 1000) : 0;
      $("sv-acd").textContent = `ACD (${acd.type}): ${acd.state}${acd.heldBack ? `, ${acd.heldBack} held back` : ""} · unanswered: ${u.count}${u.count ? `, oldest ${oldest} s${oldest > u.alertAfterSeconds ? " — overdue" : ""}` : ""}`;
      $("sv-acd").classList.toggle("alert", acd.state === "unreachable" || (u.count > 0 && oldest > u.alertAfterSeconds));
    }
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
  // Which clock the date is: the customer's own Date header, or when we received it.
  const date = e.dateSource === "received"
    ? `${new Date(e.date).toLocaleString()} (received; ${e.dateRaw ? `unreadable Date header: ${e.dateRaw}` : "the email has no Date header"})`
    : `${new Date(e.date).toLocaleString()} (customer's Date header)`;
  for (const [k, v] of [["From", e.from], ["Reply-To", (e.replyTo || []).join(", ")], ["To", e.to.join(", ")], ["Cc", e.cc.join(", ")], ["Date", date]]) {
    if (!v) continue;
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  $("warnings").textContent = data.session.warnings.join(" ");
  const flag = $("flag");
  flag.hidden = !e.classification || e.classification === "human";
  flag.textContent = flag.hidden ? "" : `${e.classification}${e.classificationReason ? ` — ${e.classificationReason}` : ""}`;
  $("html-notice").hidden = !e.htmlNotice;
  $("html-notice").textContent = e.htmlNotice || "";
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
  targets = data.replyTargets;
  showTargets();
  renderReplies(data.replies || []);
  for (const id2 of ["reply", "reply-all", "reply-text", "reply-to", "reply-cc"]) $(id2).disabled = !data.campaign.mayAnswer;
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

const list = (value) => value.split(",").map((s) => s.trim()).filter(Boolean);

function showTargets() {
  recipientsEdited = false;
  const t = targets || { reply: { to: [], cc: [] }, "reply-all": { to: [], cc: [] } };
  const cc = (r) => (r.cc.length ? `; Cc ${r.cc.join(", ")}` : "");
  $("reply-targets").textContent = `Reply goes to ${t.reply.to.join(", ") || "nobody"}${cc(t.reply)}. Reply all goes to ${t["reply-all"].to.join(", ") || "nobody"}${cc(t["reply-all"])}.`;
  $("reply-to").value = t.reply.to.join(", ");
  $("reply-cc").value = t.reply.cc.join(", ");
}

function sendWith(kind, extra = {}) {
  return act(async () => {
    if (!current) return;
    const text = $("reply-text").value;
    const recipients = kind !== "forward" && recipientsEdited ? { to: list($("reply-to").value), cc: list($("reply-cc").value) } : {};
    const r = await api("POST", `/api/sessions/${current}/${kind}`, { text, requestId: requestId(), ...recipients, ...extra });
    status(`${kind} queued for sending (${r.commandId})`);
    await refreshReplies();
  });
}

async function refreshReplies() {
  if (!current) return;
  const { replies } = await api("GET", `/api/sessions/${current}/replies`);
  renderReplies(replies);
}

const STATE_TEXT = { queued: "queued", held: "held", sent: "sent", failed: "failed", bounced: "bounced" };

/** Each reply with its state, the server's words and what to do; Retry / Edit where it did not get through. */
function renderReplies(replies) {
  const ul = $("replies");
  ul.replaceChildren();
  for (const r of replies) {
    const li = document.createElement("li");
    li.className = r.state;
    li.dataset.command = r.commandId;
    const state = document.createElement("span");
    state.className = "reply-state";
    state.textContent = STATE_TEXT[r.state] || r.state;
    const who = document.createElement("span");
    who.textContent = `${r.kind} to ${[...r.to, ...r.cc].join(", ")}`;
    li.append(state, who);
    const lines = [];
    if (r.state === "failed" || r.state === "held") lines.push(r.serverResponse || r.reason || "");
    if (r.state === "bounced" && r.bounce) lines.push(`returned later: ${[r.bounce.status, r.bounce.diagnostic].filter(Boolean).join(" ")}`);
    for (const x of r.refused || []) lines.push(`refused: ${x.recipient}: ${x.response}`);
    if (r.whatToDo) lines.push(r.whatToDo);
    for (const line of lines.filter(Boolean)) {
      const p = document.createElement("div");
      p.className = r.state === "sent" && !line.startsWith("refused") ? "notice" : "server";
      p.textContent = line;
      li.append(p);
    }
    if (r.state === "failed" || r.state === "bounced" || (r.refused || []).length) {
      const retry = document.createElement("button");
      retry.textContent = "Retry";
      retry.addEventListener("click", () => act(async () => {
        // Sent with some recipients refused: only those get it again.
        const refusedOnly = r.state === "sent" ? { to: r.refused.map((x) => x.recipient), cc: [] } : { to: r.to, cc: r.cc };
        const again = await api("POST", `/api/sessions/${current}/${r.kind}`, { text: r.text, requestId: requestId(), ...refusedOnly });
        status(`${r.kind} queued for sending again (${again.commandId})`);
        await refreshReplies();
      }));
      const edit = document.createElement("button");
      edit.textContent = "Edit";
      edit.addEventListener("click", () => {
        $("reply-text").value = r.text;
        $("reply-to").value = (r.state === "sent" ? r.refused.map((x) => x.recipient) : r.to).join(", ");
        $("reply-cc").value = r.state === "sent" ? "" : r.cc.join(", ");
        recipientsEdited = true;
        $("reply-text").focus();
      });
      li.append(retry, edit);
    }
    ul.append(li);
  }
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
        // A fresh log-in joins every queue the config gives the agent, so mail arrives without
        // typing queue names. A reload of the page (token kept) does not: an agent who left a
        // queue on purpose stays out of it.
        const me = await api("GET", "/api/me");
        const joined = me.allowed && me.allowed.length > 0 ? (await api("POST", "/api/queues/login", { queues: me.allowed })).queues : me.queues;
        await showDesk();
        status(`logged in; queues: ${joined.join(", ") || "none"}`);
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
  $("logout-everywhere").addEventListener("click", () => act(async () => {
    await api("POST", "/api/logout/everywhere", {});
    showLogin();
  }));
  for (const f of ["reply-to", "reply-cc"]) $(f).addEventListener("input", () => (recipientsEdited = true));
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
