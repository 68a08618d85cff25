import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, test } from "node:test";
import { AcdStatus, names as namesOf } from "@postroom/contracts";
import { connectNats, openKv, type KV, type NatsConnection } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import { cleanupNamespace, natsUrl, testNamespace } from "@postroom/testkit";
import { AcdStatusReporter } from "./acd-status.js";
import { retryDelayMs, acdDown, retryable } from "./webhook.js";

const root = testNamespace("acdstatus");
const names = namesOf(root);
const logger = createLogger({ service: "asd-bridge", level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
let nc: NatsConnection;
let kv: KV;

before(async () => {
  nc = await connectNats({ url: natsUrl(), name: "acd-status-test" });
  kv = await openKv(nc, names.buckets.acdStatus);
});

after(async () => {
  await nc?.close();
  await cleanupNamespace(natsUrl(), root);
});

async function stored(tenant: string): Promise<AcdStatus> {
  const e = await kv.get(names.acdStatusKey(tenant));
  return AcdStatus.parse(e!.json());
}

test("changes reported in one turn become one KV write; repeated problems are counted, not listed twice", async () => {
  let now = Date.parse("2026-12-02T03:00:00.000Z");
  const r = new AcdStatusReporter({ tenant: "acme", acd: "softdial", alertAfterSeconds: 600, kv, names, logger, clock: () => now });
  r.state("unreachable", { message: "connection refused", fix: "start CallGem" });
  r.heldBack(3);
  for (let i = 0; i < 3; i++) r.problem({ kind: "unknown-agent", subject: "ghost", detail: "no account", fix: "add ghost" });
  r.unanswered(2, new Date("2026-12-02T02:50:00.000Z"));
  await r.flush();
  assert.equal(r.stats.writes, 1, "one put for the whole burst");
  const s = await stored("acme");
  assert.deepEqual([s.state, s.heldBack, s.unanswered.count, s.unanswered.oldestAt, s.lastError?.fix], ["unreachable", 3, 2, "2026-12-02T02:50:00.000Z", "start CallGem"]);
  assert.deepEqual(s.problems.map((p) => [p.kind, p.subject, p.count]), [["unknown-agent", "ghost", 3]]);

  now += 60_000;
  r.state("connected");
  r.clearProblems("unknown-agent", "ghost");
  r.heldBack(3); // unchanged: no write of its own
  await r.flush();
  const again = await stored("acme");
  assert.deepEqual([again.state, again.since, again.problems.length], ["connected", "2026-12-02T03:01:00.000Z", 0]);
  assert.equal(again.lastError?.message, "connection refused", "why it was down stays visible after it came back");
  assert.equal(r.stats.writes, 2);
});

test("a built-in distributor is connected from the start; without a KV the reporter only keeps its snapshot", async () => {
  const r = new AcdStatusReporter({ tenant: "solo", acd: "builtin", alertAfterSeconds: 60, names, logger });
  r.unanswered(1, new Date());
  await r.flush();
  assert.equal(r.snapshot().state, "connected");
  assert.equal(r.snapshot().unanswered.count, 1);
  assert.equal(r.stats.writes, 0);
});

test("webhook retries: capped exponential backoff with jitter; only no answer or 5xx means the ACD is down", () => {
  const low = () => 0;
  const high = () => 0.999999;
  assert.deepEqual([1, 2, 3, 4, 12].map((a) => retryDelayMs(a, 1000, 300_000, low)), [500, 1000, 2000, 4000, 150_000]);
  assert.deepEqual([1, 2, 12].map((a) => retryDelayMs(a, 1000, 300_000, high)), [1000, 2000, 300_000]);
  assert.deepEqual([null, 500, 503, 429, 408, 404, 422].map((s) => [retryable(s), acdDown(s)]), [
    [true, true],
    [true, true],
    [true, true],
    [true, false],
    [true, false],
    [false, false],
    [false, false],
  ]);
});
