import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { IngestWorld, type PollerProcess } from "../support/ingest-world.js";

const USER = "support@acme.test";
const BACKLOG = 2_000;

let w: IngestWorld;
let poller: PollerProcess;

before(async () => {
  w = await IngestWorld.create("ingest-backlog", [{ id: "support", user: USER, password: "pw", inbound: { checkIntervalSeconds: 30 } }]);
  poller = w.startPoller("first");
  await w.waitForState("acme", "support", "idle");
});
after(async () => {
  await w?.close();
});

async function archivedUids(): Promise<Set<number>> {
  const { rows } = await w.pool.query<{ uid: string }>("SELECT uid FROM messages");
  return new Set(rows.map((r) => Number(r.uid)));
}

/** Reads flags first, then the archive: a message seen now must already be archived. */
async function seenBeforeArchived(): Promise<number[]> {
  const flags = await w.dovecot.flagsOf(USER);
  const archived = await archivedUids();
  // An unsolicited FETCH (another session's flag change) can come back without a UID: skip it.
  return [...flags].filter(([uid, f]) => uid !== undefined && f.includes("\\Seen") && !archived.has(uid)).map(([uid]) => uid);
}

test("new mail in an idle mailbox is published in under 2 s, without waiting for the 30 s poll", async () => {
  const sub = w.nc.subscribe(w.names.subjects.mailReceived("acme", "support"), { max: 1 });
  const started = Date.now();
  await w.dovecot.appendMessage(USER, customerEmail({ to: USER, subject: "quick" }));
  for await (const _ of sub) break;
  const took = Date.now() - started;
  console.log(`arrival to mail.received over IDLE: ${took} ms`);
  assert.ok(took < 2_000, `published after ${took} ms`);
  await waitFor(async () => (await archivedUids()).size === 1, { timeoutMs: 20_000, what: () => `first archived\n${w.dump()}` });
});

test("SIGKILL in the middle of a 2,000-message backlog: after a restart every message is archived exactly once, none seen before archived", async () => {
  // The backlog builds up while no poller runs (an outage), then a poller starts on it.
  await poller.kill("SIGTERM");
  // One IMAP connection for all appends: far quicker than a login per message.
  await w.dovecot.withImap(USER, async (client) => {
    for (let i = 0; i < BACKLOG; i++) {
      const body = `Message ${i} of the backlog.\r\n${"Lorem ipsum dolor sit amet. ".repeat(1 + (i % 40))}`;
      await client.append("INBOX", customerEmail({ to: USER, subject: `backlog ${i}`, body }));
    }
  });
  const appendedAt = Date.now();
  poller = w.startPoller("second");
  const violations: number[] = [];
  let sawBacklog = 0;
  await waitFor(
    async () => {
      sawBacklog = Math.max(sawBacklog, (await w.status("acme", "support"))?.backlog ?? 0);
      return poller.count("message published") >= 400;
    },
    { timeoutMs: 60_000, intervalMs: 100, what: () => `400 published\n${w.dump()}` },
  );
  await poller.kill("SIGKILL");
  const atKill = poller.count("message published");
  violations.push(...(await seenBeforeArchived()));
  console.log(`killed after ${atKill} of ${BACKLOG + 1} published (${Date.now() - appendedAt} ms after start); status showed a backlog of up to ${sawBacklog}`);
  const restartedAt = Date.now();
  assert.ok(atKill < BACKLOG, "killed in the middle");
  assert.ok(sawBacklog > 0, "the status reports the backlog");

  poller = w.startPoller("third");
  const total = BACKLOG + 1;
  await waitFor(
    async () => {
      violations.push(...(await seenBeforeArchived()));
      return (await archivedUids()).size === total;
    },
    { timeoutMs: 100_000, intervalMs: 1_000, what: () => `all archived\n${w.dump()}` },
  );
  console.log(`all ${total} archived ${Date.now() - restartedAt} ms after the restart`);
  await waitFor(async () => [...(await w.dovecot.flagsOf(USER)).values()].every((f) => f.includes("\\Seen")), {
    // One action may wait for the 30 s ack deadline of the killed replica's consumer.
    timeoutMs: 60_000,
    what: () => `all seen\n${w.dump()}`,
  });
  assert.deepEqual(violations, [], "no message was marked seen before it was archived");
  assert.equal(await w.count("SELECT count(*) AS n FROM messages"), total, "every message exactly once");
  assert.equal(await w.count("SELECT count(DISTINCT uid) AS n FROM messages"), total);
  assert.equal(await w.count("SELECT count(DISTINCT rfc_message_id) AS n FROM messages"), total);
});
