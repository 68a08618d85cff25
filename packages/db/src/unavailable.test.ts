import assert from "node:assert/strict";
import { test } from "node:test";
import { createServer, connect, type AddressInfo, type Socket } from "node:net";
import { createPool } from "./pool.js";
import { isDatabaseUnavailable, untilDatabaseAnswers } from "./unavailable.js";

test("untilDatabaseAnswers waits out a database that is not there and throws a wrong statement at once", async () => {
  let calls = 0;
  const waits: number[] = [];
  const value = await untilDatabaseAnswers(
    async () => {
      calls++;
      if (calls === 1) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
      if (calls === 2) throw Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" });
      return "written";
    },
    (_e, attempt) => waits.push(attempt),
  );
  assert.equal(value, "written");
  assert.deepEqual(waits, [1, 2]);
  const wrong = Object.assign(new Error('relation "nope" does not exist'), { code: "42P01" });
  assert.equal(isDatabaseUnavailable(wrong), false);
  await assert.rejects(untilDatabaseAnswers(async () => Promise.reject(wrong)), /does not exist/);
});

test("a query whose server stops answering without closing the connection fails after the pool's query timeout, as 'unavailable'", async () => {
  // A loopback proxy to the test server that, on cue, stops forwarding in both directions and
  // keeps the sockets open: what a server that vanished without FIN or RST looks like.
  const target = new URL(process.env.DATABASE_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres");
  let silent = false;
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
    }
    client.on("data", (d) => void (!silent && upstream.write(d)));
    upstream.on("data", (d) => void (!silent && client.write(d)));
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
  const url = new URL(target);
  url.host = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const pool = createPool(url.toString(), { queryTimeoutMs: 1_000 });
  try {
    assert.equal((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one, 1);
    silent = true;
    const error = await pool.query("SELECT 2").then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error, "the query fails instead of waiting for ever");
    assert.equal(isDatabaseUnavailable(error), true, String(error));
  } finally {
    for (const s of sockets) s.destroy();
    await pool.end().catch(() => undefined);
    await new Promise<void>((r) => proxy.close(() => r()));
  }
});
