import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { DATABASE_SERVICES, grantsOf, TABLE_OWNERSHIP, type DatabaseService } from "./ownership.js";
import { sqlUsesIn, tablesOf, type SqlUse } from "./sql-uses.js";

const ROOT = resolve(fileURLToPath(new URL("../../..", import.meta.url)));
const ALL_SERVICES = ["token-service", "imap-poller", ...DATABASE_SERVICES] as const;

/**
 * SQL outside services/<name>/src that runs inside a service process, with the service it runs
 * in. packages/runtime's event metrics look up arrival and offer times only for session events,
 * which only asd-bridge publishes; sessionCounts is wired by asd-bridge's main only.
 */
const SHARED_SQL: Record<string, DatabaseService[]> = {
  "packages/runtime/src/observe.ts": ["asd-bridge"],
  // The audit trail's writer and reader: asd-bridge's agent API and the archiver's reload call them.
  "packages/db/src/audit.ts": ["asd-bridge", "archiver"],
};

/** Production sources: test files and the in-service test harnesses (which seed fixtures as the owner) excluded. */
function productionSources(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") && !e.name.endsWith(".d.ts") && e.name !== "test-harness.ts")
    .map((e) => join(e.parentPath, e.name));
}

function usesOf(service: string): SqlUse[] {
  const own = productionSources(join(ROOT, "services", service, "src"));
  const shared = Object.entries(SHARED_SQL)
    .filter(([, services]) => (services as string[]).includes(service))
    .map(([file]) => join(ROOT, file));
  return [...own, ...shared].flatMap((f) => sqlUsesIn(readFileSync(f, "utf8"), relative(ROOT, f)));
}

/** Every use the service's role has no grant for, as readable lines. */
function violations(service: DatabaseService, uses: SqlUse[]): string[] {
  const grants = grantsOf(service);
  return uses
    .filter((u) => !(grants.get(u.table) ?? []).includes(u.privilege))
    .map((u) =>
      u.table in TABLE_OWNERSHIP
        ? `${u.file}:${u.line}: ${u.privilege} on ${u.table}, which ${TABLE_OWNERSHIP[u.table]!.owner} owns; ${service} has ${(grants.get(u.table) ?? ["nothing"]).join(", ")}`
        : `${u.file}:${u.line}: "${u.table}" is not a table of the ownership map (add the table, or this is SQL the check misreads)`,
    );
}

test("every query of archiver, asd-bridge and smtp-sender touches only tables its role is granted, with the right privilege", () => {
  const problems = DATABASE_SERVICES.flatMap((s) => violations(s, usesOf(s)));
  assert.deepEqual(problems, [], `grant it in packages/db/src/ownership.ts (a read of another's table as a documented known read) or change the query:\n${problems.join("\n")}`);
});

test("the check sees the queries it is about: the known reads and each owner's writes are found in the code", () => {
  const seen = (service: string) => new Set(usesOf(service).map((u) => `${u.privilege} ${u.table}`));
  const sender = seen("smtp-sender");
  for (const u of ["INSERT sends", "UPDATE sends", "SELECT messages", "SELECT addresses", "SELECT attachments"]) assert.ok(sender.has(u), `smtp-sender: ${u}`);
  const bridge = seen("asd-bridge");
  for (const u of ["INSERT sessions", "INSERT session_events", "INSERT agent_replies", "INSERT acd_callbacks", "SELECT messages", "SELECT addresses", "SELECT attachments", "INSERT audit_events", "SELECT audit_events"]) {
    assert.ok(bridge.has(u), `asd-bridge: ${u}`);
  }
  const archiver = seen("archiver");
  for (const u of ["INSERT messages", "INSERT addresses", "INSERT attachments", "INSERT conversations", "UPDATE messages", "INSERT audit_events", "INSERT loop_breaker", "INSERT mailboxes"]) {
    assert.ok(archiver.has(u), `archiver: ${u}`);
  }
});

test("a query on another service's table is caught: smtp-sender writing messages, asd-bridge reading sends", () => {
  const source = `
    export async function bad(pool) {
      await pool.query("INSERT INTO messages (message_key) VALUES ($1)", ["k"]);
      const id = 7;
      await pool.query(\`SELECT state
        FROM sends s WHERE s.command_id = \${id}\`);
    }`;
  const sender = violations("smtp-sender", sqlUsesIn(source, "bad.ts"));
  assert.equal(sender.length, 1);
  assert.match(sender[0]!, /bad\.ts:3: INSERT on messages, which archiver owns; smtp-sender has SELECT/);
  const bridge = violations("asd-bridge", sqlUsesIn(source, "bad.ts"));
  assert.ok(bridge.some((v) => /bad\.ts:5: SELECT on sends, which smtp-sender owns; asd-bridge has nothing/.test(v)), bridge.join("\n"));
  assert.match(violations("archiver", sqlUsesIn(`q("SELECT * FROM not_a_table")`, "x.ts"))[0]!, /"not_a_table" is not a table of the ownership map/);
});

test("the SQL reader: CTEs, functions in FROM, joins, upserts, comments and non-SQL strings", () => {
  assert.deepEqual(tablesOf("INSERT INTO addresses (a) SELECT $1, * FROM unnest($2::text[])"), [{ table: "addresses", privilege: "INSERT" }]);
  assert.deepEqual(
    tablesOf("WITH s AS (UPDATE sessions SET state = $2 WHERE id = $1 RETURNING id) INSERT INTO session_events (session_id) SELECT id FROM s").map((u) => `${u.privilege} ${u.table}`).sort(),
    ["INSERT session_events", "SELECT sessions", "UPDATE sessions"],
  );
  assert.deepEqual(
    tablesOf("SELECT 1 FROM sessions JOIN messages m ON m.id = message_id LEFT JOIN addresses a ON true").map((u) => u.table),
    ["sessions", "messages", "addresses"],
  );
  assert.deepEqual(tablesOf("SELECT 1 FROM sends x, agent_replies r WHERE true").map((u) => u.table), ["sends", "agent_replies"]);
  assert.deepEqual(
    tablesOf("INSERT INTO mailboxes (t) VALUES ($1) ON CONFLICT (t) DO UPDATE SET address = EXCLUDED.address").map((u) => `${u.privilege} ${u.table}`),
    ["INSERT mailboxes", "UPDATE mailboxes"],
  );
  assert.deepEqual(tablesOf("DELETE FROM loop_breaker WHERE true -- FROM sends\n"), [{ table: "loop_breaker", privilege: "DELETE" }, { table: "loop_breaker", privilege: "SELECT" }]);
  assert.deepEqual(sqlUsesIn(`// SELECT * FROM sends\nconst a = "MAIL FROM the sender"; log("an UPDATE to the desktop");`, "c.ts"), []);
});

test("token-service and imap-poller have no SQL at all: they get no database role", () => {
  for (const s of ALL_SERVICES.filter((x) => !(DATABASE_SERVICES as readonly string[]).includes(x))) {
    assert.deepEqual(usesOf(s), [], `${s} touches PostgreSQL`);
  }
});

test("SQL in packages/runtime runs only where SHARED_SQL says", () => {
  const withSql = productionSources(join(ROOT, "packages", "runtime", "src"))
    .filter((f) => sqlUsesIn(readFileSync(f, "utf8"), f).length > 0)
    .map((f) => relative(ROOT, f));
  assert.deepEqual(withSql.sort(), Object.keys(SHARED_SQL).filter((f) => f.startsWith("packages/runtime/")).sort(), "attribute the new SQL to the service(s) it runs in (SHARED_SQL above)");
});

test("every documented read is one the code still makes: a read nobody needs is not granted", () => {
  const stale: string[] = [];
  for (const [table, o] of Object.entries(TABLE_OWNERSHIP)) {
    if (table === "schema_migrations") continue; // read by waitForSchema in packages/db, for every service
    for (const r of [...o.reads, ...(o.appends ?? [])]) {
      assert.notEqual(r.service, o.owner, `${table}: the owner is listed as a reader`);
      if (!usesOf(r.service).some((u) => u.table === table)) stale.push(`${table}: ${r.service} no longer reads it`);
    }
  }
  assert.deepEqual(stale, [], "remove these reads from packages/db/src/ownership.ts");
});
