import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SoftdialSimulator, waitFor } from "@postroom/testkit";
import { BridgeHarness, call } from "../test-harness.js";

let h: BridgeHarness;
let sim: SoftdialSimulator;

before(async () => {
  sim = await SoftdialSimulator.start({ routes: [{ dn: "support@acme.test", campaign: "mailcamp", queue: "email" }], queues: { email: { timeoutSeconds: 60 } } });
  h = await BridgeHarness.create(
    "bridge-softdial",
    (archive) => ({
      logs: { path: join(archive, "..", "logs") },
      tenants: [
        {
          id: "acme",
          acd: { type: "softdial", host: "127.0.0.1", port: sim.port, switchId: "postroom-acme" },
          agents: [{ id: "agent1", password: "env:AGENT1_PW" }],
          mailboxes: [
            {
              id: "support",
              address: "support@acme.test",
              inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" },
              auth: { type: "password", password: "env:UNUSED" },
              smtp: { host: "127.0.0.1", port: 2525, tls: "none" },
            },
          ],
        },
      ],
    }),
    { AGENT1_PW: "pw-agent-1" },
  );
  await h.bridge.start();
});

after(async () => {
  await h?.close();
  await sim?.stop();
});

test("an archived email reaches the Softdial agent's desktop and closing it there ends the session in CallGem", async () => {
  sim.loginAgent("agent1", ["email"]);
  const { messageId } = await h.deliver("acme", "support", { from: "ann@customer.example", subject: "Refund: order #12?" });
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "delivered" ? r : undefined;
  }, { timeoutMs: 15_000, what: "delivered" });
  assert.equal(s.agent, "agent1");
  assert.equal(sim.sessions.get(s.id)?.state, "delivered", "CallGem got TS RS0");
  const ic = sim.received("IC").find((f) => f.params.SI === s.id)!;
  assert.equal(ic.params.DN, "support@acme.test");
  assert.equal(ic.params.IC, "postroom-acme");
  assert.match(ic.params.DT ?? "", new RegExp(`postroom acme ${s.id} Refund_ order #12_`));

  const token = (await call(h.bridge.api!.url, "POST", "/api/login", undefined, { tenant: "acme", agent: "agent1", password: "pw-agent-1" })).body.token as string;
  const mine = await call(h.bridge.api!.url, "GET", "/api/sessions", token);
  assert.deepEqual((mine.body.sessions as { id: string }[]).map((x) => x.id), [s.id]);
  assert.equal((await call(h.bridge.api!.url, "POST", `/api/sessions/${s.id}/close`, token, { outcome: "answered" })).status, 200);
  await waitFor(() => sim.sessions.get(s.id)?.state === "ended", { timeoutMs: 5_000, what: "ND at CallGem" });
  assert.equal(sim.received("ND").find((f) => f.params.SI === s.id)?.params.CN, "mailcamp");
  assert.equal(sim.received("SD").at(-1)?.params.AE, "ext-agent1");
  const history = await h.pool.query<{ state: string }>("SELECT state FROM session_events WHERE session_id = $1 ORDER BY id", [s.id]);
  assert.deepEqual(history.rows.map((r) => r.state), ["created", "offered", "queued", "assigned", "delivered", "completed"]);
  const transcripts = readdirSync(join(h.config.archive.path, "..", "logs")).filter((f) => f.startsWith("softdial-acme-"));
  assert.ok(transcripts.length >= 1, "a transcript per connection in logs.path");
});
