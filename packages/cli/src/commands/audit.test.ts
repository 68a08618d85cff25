import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { createPool, migrate, recordAudit, type Pool } from "@postroom/db";
import { createTestDatabase, tempDir, type TempDir, type TestDatabase } from "@postroom/testkit";
import { stringify } from "yaml";
import { auditTable, parseTime, run } from "./audit.js";

const exec = promisify(execFile);
const MAIN = resolve(fileURLToPath(new URL("../main.ts", import.meta.url)));
let db: TestDatabase;
let pool: Pool;
let dir: TempDir;
let configPath: string;

before(async () => {
  // run() in this process reads the environment: the file's config must decide the database.
  delete process.env.DATABASE_URL;
  delete process.env.POSTROOM_CONFIG;
  db = await createTestDatabase("cliaudit");
  pool = createPool(db.url);
  await migrate(pool);
  dir = tempDir("cli-audit");
  const mailbox = (tenant: string) => ({ id: "support", address: `support@${tenant}.test`, inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" }, auth: { type: "password", password: "env:UNUSED" } });
  configPath = join(dir.path, "postroom.yaml");
  await writeFile(configPath, stringify({ version: 1, database: { url: db.url }, archive: { path: join(dir.path, "archive") }, tenants: [{ id: "acme", mailboxes: [mailbox("acme")] }, { id: "globex", mailboxes: [mailbox("globex")] }] }));
  const session = "00000000-0000-4000-8000-0000000000aa";
  await recordAudit(pool, { tenant: "acme", actorKind: "agent", actor: "ann", kind: "agent.login", clientAddress: "192.0.2.10" });
  await recordAudit(pool, { tenant: "acme", actorKind: "agent", actor: "ann", kind: "session.forward", sessionId: session, ref: "acme/support/imap/INBOX/1/7", commandId: "agent-abc", clientAddress: "192.0.2.10", detail: { to: ["x@outside.example"] } });
  await recordAudit(pool, { tenant: "acme", actorKind: "operator", actor: "SIGHUP", kind: "config.reload", detail: { service: "archiver" } });
  await recordAudit(pool, { tenant: "acme", actorKind: "service", actor: "archiver", kind: "message.archived" as never, ref: "acme/support/imap/INBOX/1/7" });
  await recordAudit(pool, { tenant: "globex", actorKind: "agent", actor: "gus", kind: "session.open", sessionId: session, clientAddress: "198.51.100.5" });
});

after(async () => {
  await pool?.end();
  await db?.drop();
  await dir?.remove();
});

/** The command as a user runs it: a process through main.ts (slow under load: once). */
async function audited(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, ["--conditions=source", "--import", "tsx", MAIN, "audit", "--config", configPath, ...args], { env: { ...process.env, POSTROOM_CONFIG: "", DATABASE_URL: "" } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** The same command's run() in this process, with its output captured. */
async function audit(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = { stdout: "", stderr: "" };
  const code = await run(["--config", configPath, ...args], { stdout: { write: (t: string) => (out.stdout += t) }, stderr: { write: (t: string) => (out.stderr += t) } });
  return { code, ...out };
}

test("postroom audit shows one tenant's actions, newest first, and never another tenant's", async () => {
  const r = await audited("--tenant", "acme", "--json");
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { tenant: string; kind: string; actor: string; clientAddress: string | null });
  assert.deepEqual(rows.map((x) => x.kind), ["config.reload", "session.forward", "agent.login"], "people's and operators' actions; the archiver's own events only with --all");
  assert.ok(rows.every((x) => x.tenant === "acme"));
  const table = await audit("--tenant", "acme");
  assert.match(table.stdout, /session\.forward\s+192\.0\.2\.10\s+00000000-0000-4000-8000-0000000000aa\s+acme\/support\/imap\/INBOX\/1\/7 agent-abc\s+to=\["x@outside\.example"\]/);
  assert.match(table.stdout, /SIGHUP \(operator\)\s+config\.reload/);
  assert.ok(!table.stdout.includes("gus") && !table.stdout.includes("198.51.100.5"), "nothing of globex's");
  const globex = await audit("--tenant", "globex", "--json");
  assert.deepEqual(globex.stdout.trim().split("\n").map((l) => (JSON.parse(l) as { actor: string }).actor), ["gus"]);
});

test("filters: agent, kind, since, --all; and clear usage errors", async () => {
  const f = await audit("--tenant", "acme", "--agent", "ann", "--kind", "session.", "--json");
  assert.equal(f.stdout.trim().split("\n").length, 1, f.stdout + f.stderr);
  assert.equal((await audit("--tenant", "acme", "--since", "1h", "--all", "--json")).stdout.trim().split("\n").length, 4);
  assert.equal((await audit("--tenant", "acme", "--since", "2999-01-01T00:00:00Z")).stdout, "no audit events\n");
  const noTenant = await audit();
  assert.equal(noTenant.code, 2);
  assert.match(noTenant.stderr, /give --tenant/);
  const badTime = await audit("--tenant", "acme", "--since", "yesterday");
  assert.equal(badTime.code, 2);
  assert.match(badTime.stderr, /is not a time/);
  const unknown = await audit("--tenant", "initech");
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /tenant "initech" is not in .*\n {2}fix: one of acme, globex/);
});

test("times are ISO or ages", () => {
  const now = new Date("2026-12-02T08:00:00Z");
  assert.equal(parseTime("30m", now)?.toISOString(), "2026-12-02T07:30:00.000Z");
  assert.equal(parseTime("7d", now)?.toISOString(), "2026-11-25T08:00:00.000Z");
  assert.equal(parseTime("2026-12-01T08:00:00Z", now)?.toISOString(), "2026-12-01T08:00:00.000Z");
  assert.equal(parseTime("soon", now), undefined);
  assert.equal(auditTable([]), "no audit events\n");
});
