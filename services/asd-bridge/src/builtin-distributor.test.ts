import assert from "node:assert/strict";
import { test } from "node:test";
import { BuiltinDistributor, DistributionError, type DistributorEvent } from "./builtin-distributor.js";

function world(options: { agents?: string[]; maxSessions?: number; reservationSeconds?: number; queues?: Record<string, { timeoutSeconds?: number; overflow?: string }> } = {}) {
  let now = 1_000_000;
  const events: DistributorEvent[] = [];
  const d = new BuiltinDistributor({
    tenants: {
      acme: {
        reservationSeconds: options.reservationSeconds ?? 30,
        queues: options.queues ?? {},
        agents: (options.agents ?? ["ann", "bob", "cat"]).map((id) => ({ id, maxSessions: options.maxSessions ?? 2 })),
      },
      other: { reservationSeconds: 30, queues: {}, agents: [{ id: "eve", maxSessions: 5 }] },
    },
    clock: () => now,
    onEvent: (e) => events.push(e),
  });
  let n = 0;
  const offer = (queue = "email", tenant = "acme") => {
    const sessionId = `s${++n}`;
    d.offer({ sessionId, tenant, mailbox: "support", queue, offeredAt: new Date(now) });
    return sessionId;
  };
  return { d, events, offer, advance: (ms: number) => (now += ms), at: () => now };
}

test("three agents sharing thirty emails get ten each (±1) and never more than their limit at once", () => {
  const { d, events, offer, advance } = world({ maxSessions: 2 });
  for (const a of ["ann", "bob", "cat"]) d.login("acme", a, ["email"]);
  for (let i = 0; i < 30; i++) offer();

  // Holding count per agent, from the distributor's own events.
  const holding = new Map<string, number>();
  const most = new Map<string, number>();
  const total = new Map<string, number>();
  let seen = 0;
  const follow = () => {
    for (; seen < events.length; seen++) {
      const e = events[seen]!;
      if (e.type === "assigned") {
        holding.set(e.agent, (holding.get(e.agent) ?? 0) + 1);
        total.set(e.agent, (total.get(e.agent) ?? 0) + 1);
        most.set(e.agent, Math.max(most.get(e.agent) ?? 0, holding.get(e.agent)!));
      }
      if (e.type === "completed" && e.agent) holding.set(e.agent, holding.get(e.agent)! - 1);
    }
  };
  follow();
  // Agents work at different speeds: ann closes one per round, bob and cat alternate.
  for (let round = 0; round < 100 && d.waiting("acme", "email").length + ["ann", "bob", "cat"].reduce((n, a) => n + d.sessionsOf("acme", a).length, 0) > 0; round++) {
    advance(1000);
    for (const agent of ["ann", "bob", "cat"]) {
      const mine = d.sessionsOf("acme", agent);
      const first = mine[0];
      if (!first) continue;
      d.accept("acme", agent, first.sessionId);
      d.close("acme", agent, first.sessionId, "answered");
      follow();
    }
  }
  follow();
  assert.equal([...total.values()].reduce((a, b) => a + b, 0), 30, "all thirty were handed out");
  for (const agent of ["ann", "bob", "cat"]) {
    const got = total.get(agent) ?? 0;
    assert.ok(got >= 9 && got <= 11, `${agent} got ${got}`);
    assert.ok((most.get(agent) ?? 0) <= 2, `${agent} held ${most.get(agent)} at once`);
  }
});

test("the longest-idle agent gets the next session", () => {
  const { d, events, offer, advance } = world();
  d.login("acme", "bob", ["email"]);
  advance(1000);
  d.login("acme", "ann", ["email"]);
  offer();
  const assigned = events.find((e) => e.type === "assigned");
  assert.equal(assigned?.type === "assigned" && assigned.agent, "bob");
});

test("sessions wait while nobody of the queue is logged in", () => {
  const { d, events, offer } = world();
  d.login("acme", "ann", ["sales"]);
  offer("email");
  d.tick();
  assert.equal(events.filter((e) => e.type === "assigned").length, 0);
  assert.equal(d.queues("acme").find((q) => q.queue === "email")?.waiting, 1);
  d.login("acme", "bob", ["email"]);
  assert.deepEqual(d.sessionsOf("acme", "bob").map((s) => s.status), ["reserved"]);
});

test("an agent who does not accept within the reservation timeout loses the session to another", () => {
  const { d, offer, advance } = world({ reservationSeconds: 10 });
  d.login("acme", "ann", ["email"]);
  const id = offer();
  assert.equal(d.holder(id)?.agent, "ann");
  d.login("acme", "bob", ["email"]);
  advance(9_000);
  d.tick();
  assert.equal(d.holder(id)?.agent, "ann", "still reserved before the timeout");
  advance(1_000);
  d.tick();
  assert.equal(d.holder(id)?.agent, "bob");
  assert.throws(() => d.accept("acme", "ann", id), (e: unknown) => e instanceof DistributionError && e.code === "not-yours");
  d.accept("acme", "bob", id);
  assert.equal(d.holder(id)?.status, "delivered");
});

test("a session waiting past the queue timeout moves to the overflow queue and reaches its agents", () => {
  const { d, events, offer, advance } = world({ queues: { email: { timeoutSeconds: 20, overflow: "backup" } } });
  d.login("acme", "cat", ["backup"]);
  const id = offer("email");
  advance(19_000);
  d.tick();
  assert.equal(d.holder(id)?.agent, null);
  advance(1_000);
  d.tick();
  assert.ok(events.some((e) => e.type === "timed-out" && e.from === "email" && e.queue === "backup"));
  assert.equal(d.holder(id)?.agent, "cat");
});

test("a transfer lands with the named agent, or in the named queue", () => {
  const { d, offer } = world();
  d.login("acme", "ann", ["email"]);
  d.login("acme", "bob", ["email"]);
  d.login("acme", "cat", ["vip"]);
  const id = offer();
  const holder = d.holder(id)!.agent!;
  d.accept("acme", holder, id);
  const to = holder === "ann" ? "bob" : "ann";
  d.transfer("acme", holder, id, { agent: to });
  assert.equal(d.holder(id)?.agent, to);
  d.accept("acme", to, id);
  d.transfer("acme", to, id, { queue: "vip" });
  assert.equal(d.holder(id)?.agent, "cat");
});

test("no agent can touch another tenant's session or transfer to another tenant's agent", () => {
  const { d, offer } = world();
  d.login("acme", "ann", ["email"]);
  d.login("other", "eve", ["email"]);
  const id = offer();
  assert.throws(() => d.accept("other", "eve", id), (e: unknown) => e instanceof DistributionError && e.code === "unknown-session");
  d.accept("acme", "ann", id);
  assert.throws(() => d.transfer("acme", "ann", id, { agent: "eve" }), (e: unknown) => e instanceof DistributionError && e.code === "unknown-agent");
  assert.deepEqual(d.sessionsOf("other", "eve"), []);
});
