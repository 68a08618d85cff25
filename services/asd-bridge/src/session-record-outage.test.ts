import assert from "node:assert/strict";
import { createServer, connect, type Server, type Socket } from "node:net";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { BridgeHarness, call, mailbox } from "./test-harness.js";

// A database outage in the middle of a session's life. The built-in distributor changes its state
// in memory at once (an agent's close frees the agent for the next email); the row must follow
// when PostgreSQL answers again, never be dropped. Found by the chaos run: a close whose write
// failed while PostgreSQL was stopped left the session "delivered" in the table for good.
//
// The bridge reaches PostgreSQL through a TCP proxy on loopback that the test cuts (every
// connection dropped, new ones refused) and restores, so the bridge sees what a stopped server
// looks like from the network while the fixtures keep their own connection.

/** A loopback TCP proxy to PostgreSQL that can be cut and restored on the same port. */
class CuttableProxy {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    if (this.#server) return;
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on("close", () => this.#sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  }
}

const env = { ANN_PW: "ann-outage-pw-1" };
let h: BridgeHarness;
let api: string;
let proxy: CuttableProxy;

before(async () => {
  proxy = new CuttableProxy({ host: "127.0.0.1", port: 5432 });
  await proxy.up();
  h = await BridgeHarness.create(
    "sessoutage",
    () => ({ tenants: [{ id: "acme", agents: [{ id: "ann", password: "env:ANN_PW", queues: ["email"] }], mailboxes: [mailbox("support", "acme")] }] }),
    env,
    {},
    {
      databaseUrl: (url) => {
        const u = new URL(url);
        u.host = `127.0.0.1:${proxy.port}`;
        return u.toString();
      },
    },
  );
  await h.bridge.start();
  api = h.bridge.api!.url;
});

after(async () => {
  // Restored if a failed test left it cut, so the bridge can stop cleanly.
  await proxy?.up().catch(() => undefined);
  await h?.close();
  await proxy?.cut();
});

test("a session its agent closes while PostgreSQL is unreachable is recorded completed, once, when the database answers again", async () => {
  const login = await call(api, "POST", "/api/login", undefined, { tenant: "acme", agent: "ann", password: env.ANN_PW });
  assert.equal(login.status, 200);
  const ann = login.body.token as string;
  assert.equal((await call(api, "POST", "/api/queues/login", ann, { queues: ["email"] })).status, 200);
  const { messageId } = await h.deliver("acme", "support", { subject: "Where is my order?" });
  const assigned = await waitFor(async () => {
    const s = await h.sessionOf(messageId);
    return s?.state === "assigned" ? s : undefined;
  }, { timeoutMs: 20_000, what: "the session assigned to ann" });
  assert.equal((await call(api, "POST", `/api/sessions/${assigned.id}/accept`, ann, {})).status, 200);
  await waitFor(async () => (await h.sessionOf(messageId))?.state === "delivered", { timeoutMs: 20_000, what: "the session delivered" });

  await proxy.cut();
  // The agent's close reaches the distributor (as it did in the chaos run: the API had read the
  // session just before the database went); its write cannot be made now.
  const closing = h.bridge.close("acme", "ann", assigned.id, "answered");
  assert.deepEqual(h.bridge.distributor.sessionsOf("acme", "ann"), [], "the distributor let the session go at once");
  assert.equal((await h.sessionOf(messageId))?.state, "delivered", "the row cannot have followed yet");
  await proxy.up();
  await closing;
  assert.equal((await h.sessionOf(messageId))?.state, "completed", "recorded once the database answered");
  const events = await h.pool.query<{ n: string }>("SELECT count(*) AS n FROM session_events WHERE session_id = $1 AND state = 'completed'", [assigned.id]);
  assert.equal(events.rows[0]!.n, "1", "one completed event");
});
