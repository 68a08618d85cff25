import assert from "node:assert/strict";
import { after, test } from "node:test";
import { names } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import { cleanupNamespace, natsUrl, testNamespace, waitFor } from "@postroom/testkit";
import { LeaseManager, planLeases, type LeaseTarget, type LeaseTiming } from "./lease.js";

const targets = Array.from({ length: 10 }, (_, i) => `lease.acme.m${i}`);

test("a lone replica takes every mailbox; a second one makes the first release half", () => {
  const alone = planLeases({ replica: "a", targets, owned: [], taken: new Set(), replicas: 1 });
  assert.equal(alone.acquire.length, 10);
  const crowded = planLeases({ replica: "a", targets, owned: targets, taken: new Set(targets), replicas: 2 });
  assert.equal(crowded.release.length, 5);
  assert.equal(crowded.acquire.length, 0);
});

test("a replica never plans to take a mailbox someone holds, nor more than its share", () => {
  const taken = new Set(targets.slice(0, 7));
  const plan = planLeases({ replica: "b", targets, owned: [], taken, replicas: 2 });
  assert.deepEqual(plan.acquire.sort(), targets.slice(7).sort());
  assert.equal(planLeases({ replica: "b", targets, owned: [], taken: new Set(), replicas: 3 }).acquire.length, 4);
});

test("replicas prefer different free mailboxes, so simultaneous starts rarely collide", () => {
  const a = planLeases({ replica: "replica-a", targets, owned: [], taken: new Set(), replicas: 2 }).acquire;
  const b = planLeases({ replica: "replica-b", targets, owned: [], taken: new Set(), replicas: 2 }).acquire;
  assert.ok(a.filter((k) => b.includes(k)).length < 5, "not the same preference order");
});

const root = testNamespace("leases");
after(() => cleanupNamespace(natsUrl(), root));

// Scaled-down timing so the test is quick; the production bound uses the same arithmetic.
const fast: LeaseTiming = { ttlMs: 3_000, renewEveryMs: 500, fenceMarginMs: 1_000 };

test("two replicas share mailboxes, never hold one at the same time, and a dead one's mailboxes move within the bound", async () => {
  const logger = createLogger({ service: "lease-test", level: "silent" });
  const mailboxes: LeaseTarget[] = Array.from({ length: 8 }, (_, i) => ({ tenant: "acme", mailbox: `m${i}` }));
  const holders = new Map<string, Set<string>>();
  const violations: string[] = [];
  const ncs = [await connectNats({ url: natsUrl(), name: "lease-a" }), await connectNats({ url: natsUrl(), name: "lease-b" })];
  const kvs = await Promise.all(ncs.map((nc) => openKv(nc, names(root).buckets.leases, { ttlMs: fast.ttlMs })));
  const make = (replica: string, i: number) =>
    new LeaseManager({
      kv: kvs[i]!,
      replica,
      tenants: null,
      targets: mailboxes,
      timing: fast,
      logger,
      onAcquired: async (t) => {
        const set = holders.get(t.mailbox) ?? new Set<string>();
        if (set.size > 0) violations.push(`${t.mailbox}: ${replica} while ${[...set].join(",")}`);
        set.add(replica);
        holders.set(t.mailbox, set);
      },
      onLost: async (t) => void holders.get(t.mailbox)?.delete(replica),
      onReleasing: async (t) => void holders.get(t.mailbox)?.delete(replica),
    });
  const a = make("replica-a", 0);
  await a.start();
  assert.equal(a.owned.length, 8, "alone, it takes them all");
  const b = make("replica-b", 1);
  await b.start();
  await waitFor(() => a.owned.length === 4 && b.owned.length === 4, { timeoutMs: 10_000, what: "an even spread" });
  // Replica b dies: its NATS connection goes away without releasing anything.
  const died = Date.now();
  await ncs[1]!.close();
  // The bounds carry a few seconds of slack for a loaded CI machine, where timers fire late; the
  // property that may never bend is the one below them: never two holders at once.
  await waitFor(() => b.owned.length === 0, { timeoutMs: fast.ttlMs + 5_000, what: "the dead replica fencing itself" });
  await waitFor(() => a.owned.length === 8, { timeoutMs: 15_000, what: "takeover" });
  const took = Date.now() - died;
  assert.ok(took <= fast.ttlMs + 2 * fast.renewEveryMs + 5_000, `took over in ${took} ms`);
  assert.deepEqual(violations, []);
  await a.stop();
  await b.stop().catch(() => undefined);
  await ncs[0]!.close();
});
