// The agent API against the attacks issue 17 tried: password guessing, a forward to hundreds of
// addresses, a rebound DNS name, a stolen token that outlives "log out". Through the real HTTP
// API of a bridge with real NATS and PostgreSQL; the clock is the real one plus a skew the tests
// move forward, so that a 15-minute lockout passes in no time.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { queryAudit } from "@postroom/db";
import { waitFor } from "@postroom/testkit";
import { BridgeHarness, call, mailbox } from "./test-harness.js";

const exec = promisify(execFile);
/** The postroom command's entry (run as a process, never imported: asd-bridge does not depend on the CLI). */
const CLI = fileURLToPath(new URL("../../../packages/cli/src/main.ts", import.meta.url));
let h: BridgeHarness;
let api: string;
let skew = 0;
/** While set, the bridge's clock stands still (a slow machine must not let a 1 s backoff pass mid-test). */
let frozen: number | undefined;
const advance = (ms: number) => (frozen !== undefined ? (frozen += ms) : (skew += ms));
const env = { ANN_PW: "ann-hardening-pw", BOB_PW: "bob-hardening-pw", GUS_PW: "gus-hardening-pw" };

before(async () => {
  h = await BridgeHarness.create(
    "apiharden",
    () => ({
      agentApi: { port: 0 },
      tenants: [
        {
          id: "acme",
          agents: [
            { id: "ann", password: "env:ANN_PW", queues: ["email"], maxSessions: 10 },
            { id: "bob", password: "env:BOB_PW", queues: ["email"], supervisor: true },
          ],
          mailboxes: [mailbox("support", "acme", { agentsMayForward: true, defaultBcc: ["archive@acme.test"], smtp: { host: "127.0.0.1", port: 2525, tls: "none", maxRecipients: 5 } })],
        },
        {
          id: "globex",
          agents: [{ id: "gus", password: "env:GUS_PW", queues: ["email"], supervisor: true }],
          mailboxes: [mailbox("support", "globex")],
        },
      ],
    }),
    env,
    { clock: () => frozen ?? Date.now() + skew },
  );
  await h.bridge.start();
  api = h.bridge.api!.url;
});

after(async () => {
  await h?.close();
});

const login = (agent: string, password: string, tenant = "acme") => call(api, "POST", "/api/login", undefined, { tenant, agent, password });
async function token(agent: string, password: string, tenant = "acme"): Promise<string> {
  const r = await login(agent, password, tenant);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.token as string;
}

/** One request with the Host header as given (fetch would put the URL's own). */
function withHost(host: string | undefined, path: string): Promise<{ status: number; body: string }> {
  const u = new URL(api);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: "GET", setHost: false, headers: host === undefined ? {} : { host } }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("50 wrong passwords in a row are slowed down and then locked; the right password is refused during the lockout and accepted once it expires", async () => {
  frozen = Date.now() + skew;
  const statuses: number[] = [];
  let retryAfter = "";
  const started = performance.now();
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${api}/api/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tenant: "acme", agent: "ann", password: `guess-${i}` }) });
    statuses.push(res.status);
    if (res.status === 429) retryAfter = res.headers.get("retry-after") ?? "";
    await res.body?.cancel();
  }
  console.log(`50 wrong logins in ${Math.round(performance.now() - started)} ms: ${statuses.filter((s) => s === 401).length} checked (401), ${statuses.filter((s) => s === 429).length} refused unchecked (429)`);
  assert.deepEqual(statuses.slice(0, 5), [401, 401, 401, 401, 401], "the first five are checked");
  assert.ok(statuses.slice(5).every((s) => s === 429), "then every attempt within the wait is refused unchecked");
  assert.ok(Number(retryAfter) >= 1, `Retry-After: ${retryAfter}`);
  const during = await login("ann", env.ANN_PW);
  assert.equal(during.status, 429, "the right password during the wait is refused");
  assert.match(String(during.body.error), /wait \d+ s/);

  // Wrong guesses each time the wait is over, until the account locks (lockAfter 10 by default).
  let locked;
  let checked = statuses.filter((s) => s === 401).length;
  for (let guard = 0; guard < 20 && !locked; guard++) {
    advance(60_000); // one minute: past every backoff, far from the 15-minute memory
    const r = await login("ann", "still-guessing");
    assert.equal(r.status, 401, JSON.stringify(r.body));
    checked++;
    const next = await login("ann", env.ANN_PW);
    if (next.status === 429 && /locked/.test(String(next.body.error))) locked = next;
  }
  assert.ok(locked, "the account locks");
  assert.match(String(locked.body.error), /locked for \d+ s \(the right password is refused too/);
  advance(5 * 60_000);
  assert.equal((await login("ann", env.ANN_PW)).status, 429, "still locked five minutes later, to the right password");
  assert.equal((await login("bob", env.BOB_PW)).status, 200, "another agent logs in meanwhile");

  advance(11 * 60_000); // past the 15 minutes
  assert.equal((await login("ann", env.ANN_PW)).status, 200, "the lockout expired");
  skew = frozen - Date.now();
  frozen = undefined;

  const logged = h.logs.join("");
  assert.match(logged, /"clientAddress":"127\.0\.0\.1","reason":"wrong password","msg":"agent login refused"/, "each refusal is logged with the client address");
  assert.match(logged, /"clientAddress":"127\.0\.0\.1","scope":"account","lock":"backoff","retryAfterSeconds":\d+,"msg":"agent login refused: too many wrong passwords"/, "so is each unchecked one");
  assert.match(logged, /"msg":"agent logins locked"/);
  assert.ok(!logged.includes("guess-") && !logged.includes("still-guessing") && !logged.includes(env.ANN_PW), "no password in the log");
  const rows = await queryAudit(h.pool, { tenant: "acme", actor: "ann", kindPrefix: "agent.login" });
  assert.ok(rows.some((r) => r.kind === "agent.login-locked" && r.clientAddress === "127.0.0.1"), "the lock is in the audit trail");
  assert.equal(checked, 10, "locked at the 10th wrong password (lockAfter)");
  assert.equal(rows.filter((r) => r.kind === "agent.login-refused").length, checked, "one row per checked refusal (the unchecked ones are only logged)");
  assert.equal(rows[0]!.kind, "agent.login", "the successful login is the newest row");
});

test("requests for a host name the API does not serve are refused (DNS rebinding); its own names are answered", async () => {
  const port = new URL(api).port;
  assert.equal((await withHost(`127.0.0.1:${port}`, "/api/openapi.yaml")).status, 200);
  assert.equal((await withHost(`localhost:${port}`, "/")).status, 200);
  const rebound = await withHost(`rebind.attacker.example:${port}`, "/");
  assert.equal(rebound.status, 421);
  assert.match(rebound.body, /agentApi\.allowedHosts/);
  assert.equal((await withHost(`rebind.attacker.example:${port}`, "/api/me")).status, 421, "before authentication is even looked at");
  assert.equal((await withHost(undefined, "/")).status, 400, "no Host header");
  assert.match(h.logs.join(""), /"host":"rebind\.attacker\.example:\d+".*"msg":"request for a host name this API does not serve refused"/);
});

test("a forward over the campaign's recipient cap is refused with a clear error before anything is sent; addresses with CR/LF are refused", async () => {
  const ann = await token("ann", env.ANN_PW);
  await call(api, "POST", "/api/queues/login", ann, { queues: ["email"] });
  const { messageId } = await h.deliver("acme", "support", { subject: "Cap" });
  const session = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "assigned" ? r : undefined;
  }, { timeoutMs: 15_000, what: "assigned to ann" });
  const sends = async () => (await (await jetstreamManager(h.nc)).streams.info(h.names.streams.sendCommands)).state.messages;
  const before = await sends();

  // maxRecipients 5 here, and the campaign adds one default Bcc: four addresses are the most.
  const five = ["a", "b", "c", "d", "e"].map((x) => `${x}@outside.example`);
  const over = await call(api, "POST", `/api/sessions/${session.id}/forward`, ann, { text: "fyi", requestId: "cap-over-01", to: five });
  assert.equal(over.status, 400);
  assert.equal(over.body.error, "6 recipients (with the campaign's 1 default Cc/Bcc) is more than this campaign allows in one message (5, smtp.maxRecipients): send to fewer addresses");
  const cr = await call(api, "POST", `/api/sessions/${session.id}/forward`, ann, { text: "fyi", requestId: "cap-crlf-01", to: ["a@outside.example\r\nBcc: all@outside.example"] });
  assert.equal(cr.status, 400);
  assert.match(String(cr.body.error), /is not a valid e-mail address/);
  assert.equal(await sends(), before, "no command was published");

  const ok = await call(api, "POST", `/api/sessions/${session.id}/forward`, ann, { text: "fyi", requestId: "cap-ok-01", to: five.slice(0, 4) });
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
  assert.equal(await sends(), before + 1);
});

test("log out everywhere ends every token of that agent and no one else's; a supervisor can do it for an agent of her tenant only", async () => {
  const [a1, a2, a3] = [await token("ann", env.ANN_PW), await token("ann", env.ANN_PW), await token("ann", env.ANN_PW)];
  const bob = await token("bob", env.BOB_PW);
  const gus = await token("gus", env.GUS_PW, "globex");
  const out = await call(api, "POST", "/api/logout/everywhere", a1);
  assert.equal(out.status, 200);
  assert.ok((out.body.tokensEnded as number) >= 3, JSON.stringify(out.body));
  for (const t of [a1, a2, a3]) assert.equal((await call(api, "GET", "/api/me", t)).status, 401, "every one of ann's tokens is gone");
  assert.equal((await call(api, "GET", "/api/me", bob)).status, 200, "bob's is not");

  const again = [await token("ann", env.ANN_PW), await token("ann", env.ANN_PW)];
  assert.equal((await call(api, "POST", "/api/supervisor/agents/ann/logout", gus)).status, 404, "globex's supervisor does not know acme's ann");
  assert.equal((await call(api, "GET", "/api/me", again[0])).status, 200);
  const kicked = await call(api, "POST", "/api/supervisor/agents/ann/logout", bob);
  assert.deepEqual([kicked.status, kicked.body.tokensEnded], [200, 2]);
  for (const t of again) assert.equal((await call(api, "GET", "/api/me", t)).status, 401);
  assert.equal((await call(api, "POST", "/api/supervisor/agents/bob/logout", again[0])).status, 401);
});

test("every agent action through the API is in the audit trail with who, when, what and from where; a supervisor reads her own tenant's only", async () => {
  // The rows' times are PostgreSQL's (now()), not the bridge's skewed clock.
  const since = new Date(Date.now() - 1000);
  const ann = await token("ann", env.ANN_PW);
  await call(api, "POST", "/api/queues/login", ann, { queues: ["email"] });
  const { messageId, messageKey } = await h.deliver("acme", "support", { subject: "Audited" });
  const session = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "assigned" && r.agent === "ann" ? r : undefined;
  }, { timeoutMs: 15_000, what: "assigned to ann" });
  assert.equal((await call(api, "GET", `/api/sessions/${session.id}`, ann)).status, 200);
  assert.equal((await call(api, "POST", `/api/sessions/${session.id}/accept`, ann, {})).status, 200);
  const reply = await call(api, "POST", `/api/sessions/${session.id}/reply`, ann, { text: "Hello", requestId: "audit-reply-01" });
  assert.equal(reply.status, 202);
  assert.equal((await call(api, "POST", `/api/sessions/${session.id}/transfer`, ann, { queue: "email" })).status, 200);
  const back = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "assigned" && r.agent ? r : undefined;
  }, { timeoutMs: 15_000, what: "assigned again after the transfer" });
  const holder = back.agent === "bob" ? await token("bob", env.BOB_PW) : ann;
  assert.equal((await call(api, "POST", `/api/sessions/${session.id}/accept`, holder, {})).status, 200);
  assert.equal((await call(api, "POST", `/api/sessions/${session.id}/close`, holder, { outcome: "answered" })).status, 200);
  assert.equal((await call(api, "POST", "/api/logout", ann)).status, 200);
  // globex does something too: it must never show up in acme's trail.
  const gus = await token("gus", env.GUS_PW, "globex");

  const bob = await token("bob", env.BOB_PW);
  const trail = await call(api, "GET", `/api/supervisor/audit?since=${encodeURIComponent(since.toISOString())}`, bob);
  assert.equal(trail.status, 200, JSON.stringify(trail.body));
  const events = (trail.body.events as { tenant: string; actor: string; kind: string; sessionId: string | null; ref: string | null; commandId: string | null; clientAddress: string | null; at: string; detail: Record<string, unknown> }[]).reverse();
  assert.ok(events.every((e) => e.tenant === "acme"), "only acme's rows");
  assert.ok(!events.some((e) => e.actor === "gus"));
  const annKinds = events.filter((e) => e.actor === "ann").map((e) => e.kind);
  for (const kind of ["agent.login", "queue.login", "session.open", "session.accept", "session.reply", "session.transfer", "agent.logout"]) assert.ok(annKinds.includes(kind), `${kind} in ${annKinds.join(", ")}`);
  assert.ok(events.some((e) => e.kind === "session.close" && e.detail.outcome === "answered"));
  const replyRow = events.find((e) => e.kind === "session.reply")!;
  assert.deepEqual([replyRow.sessionId, replyRow.ref, replyRow.commandId, replyRow.clientAddress], [session.id, messageKey, reply.body.commandId, "127.0.0.1"]);
  assert.deepEqual(replyRow.detail.to, ["ann@customer.example"]);
  assert.ok(events.every((e) => !Number.isNaN(Date.parse(e.at))));

  assert.equal((await call(api, "GET", "/api/supervisor/audit", ann)).status, 401, "ann logged out");
  const annAgain = await token("ann", env.ANN_PW);
  assert.equal((await call(api, "GET", "/api/supervisor/audit", annAgain)).status, 403, "supervisors only");
  const globex = await call(api, "GET", "/api/supervisor/audit?agent=ann", gus);
  assert.deepEqual(globex.body.events, [], "globex's supervisor sees none of acme's rows, even asking for acme's agent");
  assert.equal((await call(api, "GET", "/api/supervisor/audit?since=yesterday", bob)).status, 400);
  // Append-only, whatever a service tries.
  await assert.rejects(h.pool.query("DELETE FROM audit_events WHERE tenant = 'acme'"), /append-only/);

  // The operator's view of the same rows: `postroom audit`, as a process, over this database.
  const configFile = join(h.dir.path, "postroom.json");
  await writeFile(configFile, JSON.stringify({ version: 1, database: { url: h.db.url }, archive: { path: join(h.dir.path, "archive") }, tenants: h.config.tenants.map((t) => ({ id: t.id, mailboxes: [mailbox("support", t.id)] })) }));
  const cli = await exec(process.execPath, ["--conditions=source", "--import", "tsx", CLI, "audit", "--config", configFile, "--tenant", "acme", "--since", since.toISOString(), "--json"], { env: { ...process.env, DATABASE_URL: "", POSTROOM_CONFIG: "" } });
  const printed = cli.stdout.trim().split("\n").map((l) => JSON.parse(l) as { tenant: string; actor: string; kind: string; commandId: string | null });
  assert.ok(printed.every((r) => r.tenant === "acme") && !printed.some((r) => r.actor === "gus"), "the command shows acme's rows only");
  assert.ok(printed.some((r) => r.kind === "session.reply" && r.commandId === reply.body.commandId), "with the reply the API recorded");
});

test("guessing across many agents from one address locks the address for every account", async () => {
  skew += 60 * 60_000; // earlier tests' failures forgotten
  const statuses: number[] = [];
  for (let i = 0; i < 60; i++) statuses.push((await login(`nobody-${i}`, "x")).status);
  assert.equal(statuses.filter((s) => s === 401).length, 50, "addressLockAfter 50 by default");
  assert.ok(statuses.slice(50).every((s) => s === 429));
  const r = await login("bob", env.BOB_PW);
  assert.equal(r.status, 429);
  assert.match(String(r.body.error), /locked for \d+ s/);
  assert.match(String(r.body.error), /client address/);
  const made = await queryAudit(h.pool, { tenant: "acme", actor: "nobody-1" });
  assert.equal(made.length, 1, "an unknown agent of a real tenant is recorded as a refusal");
  skew += 16 * 60_000;
  assert.equal((await login("bob", env.BOB_PW)).status, 200);
});
