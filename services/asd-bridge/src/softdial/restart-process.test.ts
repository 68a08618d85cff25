import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { AcdStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { freePort, SoftdialSimulator, waitFor } from "@postroom/testkit";
import { BridgeHarness, call, mailbox } from "../test-harness.js";
import { frameProblems } from "./codec.js";

/**
 * asd-bridge as a real process (its main.ts, as `postroom up` starts it) against the CallGem
 * simulator, killed with SIGKILL and started again: what it knows after the restart comes from
 * PostgreSQL alone.
 */

const MAIN = resolve(fileURLToPath(new URL("../main.ts", import.meta.url)));
const PASSWORD = "pw-team";
let h: BridgeHarness;
let sim: SoftdialSimulator;
let configPath = "";
let httpPort = 0;
let child: ChildProcess | undefined;
const logs: string[] = [];


function startBridge(): void {
  const c = spawn(process.execPath, ["--conditions=source", "--import", "tsx", MAIN], {
    env: { ...process.env, POSTROOM_CONFIG: configPath, POSTROOM_HTTP_PORT: String(httpPort), TEAM_PW: PASSWORD, UNUSED: "x", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let partial = "";
  const collect = (data: Buffer) => {
    const lines = (partial + data.toString("utf8")).split("\n");
    partial = lines.pop() ?? "";
    logs.push(...lines.filter((l) => l.trim()));
  };
  c.stdout!.on("data", collect);
  c.stderr!.on("data", collect);
  child = c;
}

async function killBridge(signal: NodeJS.Signals): Promise<void> {
  const c = child;
  if (!c || c.exitCode !== null) return;
  const gone = new Promise<void>((r) => c.once("exit", () => r()));
  c.kill(signal);
  await gone;
  child = undefined;
}

/** The agent API's address, from the newest "agent API listening" line. */
function apiUrl(): string | undefined {
  const line = [...logs].reverse().find((l) => l.includes("agent API listening"));
  return line ? (JSON.parse(line) as { url: string }).url : undefined;
}

before(async () => {
  sim = await SoftdialSimulator.start({
    routes: [
      { dn: "team@acme.test", campaign: "teamcamp", queue: "team" },
      { dn: "ghosts@acme.test", campaign: "ghostcamp", queue: "ghostq" },
    ],
    queues: { team: { timeoutSeconds: 600 }, ghostq: { timeoutSeconds: 600 } },
    retryMs: 500,
  });
  h = await BridgeHarness.create("softdial-restart", (archive) => ({
    logs: { path: join(archive, "..", "logs") },
    tenants: [
      {
        id: "acme",
        acd: { type: "softdial", host: "127.0.0.1", port: sim.port, switchId: "postroom-acme" },
        agents: ["p1", "p2", "p3"].map((id) => ({ id, password: "env:TEAM_PW" })),
        mailboxes: [mailbox("team", "acme"), mailbox("ghosts", "acme")],
      },
    ],
  }));
  configPath = join(h.dir.path, "postroom.yaml");
  // JSON is YAML; the parsed config (defaults filled in) is a valid input again.
  await writeFile(configPath, JSON.stringify(h.config));
  httpPort = await freePort();
  startBridge();
  await waitFor(() => sim.received("TO").length > 0, { timeoutMs: 30_000, what: `asd-bridge connected\n${logs.slice(-20).join("\n")}` });
});

after(async () => {
  await killBridge("SIGTERM");
  await h?.close();
  await sim?.stop();
});

test("asd-bridge SIGKILLed with 5 sessions queued and 3 with agents, then restarted: the 3 keep theirs, the 5 are offered again with their SIs, every email ends answered once", async () => {
  for (const a of ["p1", "p2", "p3"]) sim.loginAgent(a, ["team"]);
  // For the next test: waits in CallGem's ghost queue (nobody there yet) across the restart. Mail
  // that arrives right after a SIGKILL may sit with the dead process's pull request until
  // JetStream's ack wait; this one is in PostgreSQL before the kill.
  const ghostMail = await h.deliver("acme", "ghosts", { subject: "for nobody" });
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push((await h.deliver("acme", "team", { subject: `Frage ${i}: Größe?` })).messageId);
  const rows = await waitFor(async () => {
    const r = await Promise.all(ids.map((id) => h.sessionOf(id)));
    return r.filter((x) => x?.state === "delivered").length === 3 && r.filter((x) => x?.state === "queued").length === 5 ? r.map((x) => x!) : undefined;
  }, { timeoutMs: 20_000, what: "three delivered, five queued" });
  const held = new Map(rows.filter((r) => r.state === "delivered").map((r) => [r.id, r.agent!]));
  await waitFor(async () => (await h.sessionOf(ghostMail.messageId))?.state === "queued", { timeoutMs: 10_000, what: "the ghost mail queued" });
  const connectionBefore = sim.sessions.get(rows[0]!.id)!.connection;

  await killBridge("SIGKILL");
  await waitFor(() => sim.openConnections === 0, { timeoutMs: 20_000, what: "CallGem saw the socket close" });
  const restartedAt = logs.length;
  startBridge();

  await waitFor(() => rows.every((r) => (sim.sessions.get(r.id)?.offers ?? 0) === 2 && sim.sessions.get(r.id)!.connection > connectionBefore), {
    timeoutMs: 30_000,
    what: `all eight offered again on the new connection\n${logs.slice(-20).join("\n")}`,
  });
  await waitFor(() => [...held].every(([si, agent]) => sim.sessions.get(si)?.state === "delivered" && sim.busyWith(agent) === si), { timeoutMs: 10_000, what: "held sessions back with their agents" });
  const reIcs = sim.received("IC").filter((f) => f.connection > connectionBefore && ids.length > 0 && rows.some((r) => r.id === f.params.SI));
  for (const [si, agent] of held) assert.equal(reIcs.find((f) => f.params.SI === si)?.params.HE, agent, "HE names her");
  const resyncLog = await waitFor(() => logs.slice(restartedAt).find((l) => l.includes("sessions offered again to Softdial CallGem")), { timeoutMs: 20_000, what: "the resync logged" });
  const counts = JSON.parse(resyncLog) as { reoffered: number; held: number };
  assert.deepEqual({ reoffered: counts.reoffered, held: counts.held }, { reoffered: 6, held: 3 }, "the log counts what was sent: the 5 and the ghost mail, and the 3 held");
  assert.equal(logs.filter((l) => l.includes('"msg":"session offered"') && l.includes('"mailbox":"team"')).length, 8, "each email announced once, not again after the restart");

  // The agents log in again (tokens live in memory) and close what they have, until all is done.
  await waitFor(() => apiUrl(), { timeoutMs: 10_000, what: "agent API" });
  const tokens = new Map<string, string>();
  for (const a of ["p1", "p2", "p3"]) tokens.set(a, (await call(apiUrl()!, "POST", "/api/login", undefined, { tenant: "acme", agent: a, password: PASSWORD })).body.token as string);
  await h.closeAsDelivered(ids, async (r) => {
    assert.equal((await call(apiUrl()!, "POST", `/api/sessions/${r.id}/close`, tokens.get(r.agent), { outcome: "answered" })).status, 200);
  });
  for (const r of rows) {
    assert.equal(new Set(sim.sessions.get(r.id)!.deliveredTo).size, 1, `${r.id} reached one agent`);
    assert.equal((await h.pool.query("SELECT 1 FROM session_events WHERE session_id = $1 AND state = 'completed'", [r.id])).rowCount, 1, "answered once");
  }
  await waitFor(() => ids.length === 8 && rows.every((r) => sim.sessions.get(r.id)?.state === "ended"), { timeoutMs: 20_000, what: "ended at CallGem" });
  assert.equal(sim.sent("ER").length, 0, "no ND or SD rejected");
  for (const f of sim.received()) assert.deepEqual(frameProblems(`${f.text}\0`, sim.encoding), [], f.text);
  const tks = sim.received().filter((f) => f.params.TK !== undefined && f.connection > connectionBefore).map((f) => f.params.TK!);
  await waitFor(() => tks.every((tk: string) => sim.sent("MV").some((m) => m.params.TK === tk)) || undefined, { timeoutMs: 20_000, what: "an MV for every TK since the restart" });
  assert.equal(new Set(sim.received().map((f) => f.params.TK).filter(Boolean)).size, sim.received().filter((f) => f.params.TK).length, "TKs unique across both processes");
});

test("a refusal of CallGem's agent without an account is counted in the service's metrics", async () => {
  const since = logs.length;
  sim.loginAgent("ghost", ["ghostq"]);
  const sample = await waitFor(async () => {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith("postroom_asd_bridge_softdial_refusals_total") && l.includes('reason="unknown-agent"'));
    return line && Number(line.split(" ").at(-1)) >= 2 ? line : undefined;
  }, { timeoutMs: 15_000, intervalMs: 250, what: "the refusals counter" });
  assert.match(sample, /tenant="acme"/);
  assert.doesNotMatch(sample, /ghost/, "an agent CallGem names is not a label");
  assert.equal(logs.slice(since).filter((l) => l.includes("refused a CallGem transfer")).length, 1, "logged once");
  // What `postroom status` reads: the ACD status entry this process keeps in NATS.
  const kv = await openKv(h.nc, h.names.buckets.acdStatus);
  const status = await waitFor(async () => {
    const e = await kv.get(h.names.acdStatusKey("acme"));
    const st = e?.value.length ? AcdStatus.parse(e.json()) : undefined;
    return st?.problems.some((p) => p.kind === "unknown-agent" && p.subject === "ghost") ? st : undefined;
  }, { timeoutMs: 10_000, what: "the unknown agent in the ACD status" });
  assert.equal(status.state, "connected");
  assert.match(status.problems.find((p) => p.kind === "unknown-agent")!.fix, /tenants\[acme\]\.agents/);
});
