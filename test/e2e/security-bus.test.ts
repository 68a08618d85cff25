// The services on a private nats-server 2.9 where each has its own user with the permissions
// generated from @postroom/contracts: the walking-skeleton path works with them (nothing missing),
// and other services' users and strangers are refused what they have no need of.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { inboxPrefix } from "@postroom/contracts";
import { connectNats, jetStreamOf, openKv, openObjectStore, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT, SUPPORT_PASSWORD } from "../support/fixture.js";

let w: E2eWorld;
let archivedKey = "";
let rawObject = "";

before(async () => {
  w = await E2eWorld.create(
    "secbus",
    (c) => {
      // A second tenant, so per-tenant users have a neighbour to be kept from.
      c.tenants!.push({ id: "globex", acd: { type: "builtin" }, mailboxes: [{ ...c.tenants![0]!.mailboxes![0]!, id: "sales", address: "sales@globex.test" }] });
    },
    {
      secure: true,
      bus: {
        extraUsers: [
          { service: "asd-bridge", tenant: "acme", user: "asd-bridge-acme" },
          { service: "archiver", tenant: "acme", user: "archiver-acme" },
        ],
      },
    },
  );
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

/** TLS as the services have it, when the bus serves TLS (secure mode): what is refused here is the user, not the transport. */
function tls(): { tls?: { caFile: string } } {
  const ca = w.config.nats?.tls?.ca;
  return ca ? { tls: { caFile: ca } } : {};
}

/** A connection as one of the bus's users, with that service's inbox prefix (as the services connect). */
async function as(user: string, service?: Parameters<typeof inboxPrefix>[0], tenant?: string): Promise<NatsConnection> {
  return connectNats({
    url: w.bus!.nats.url,
    ...tls(),
    name: `intruder-${user}`,
    user,
    password: w.bus!.passwords[user]!,
    ...(service ? { inboxPrefix: inboxPrefix(service, tenant) } : {}),
  });
}

test("with one least-privilege user per service, an email is archived, offered, marked seen and answered — and the server refused nothing", async () => {
  const raw = customerEmail({ to: SUPPORT, subject: "Least privilege", messageId: "<lp-1@customer.example>" });
  const { uid, uidValidity } = await w.dovecot.appendMessage(SUPPORT, raw);
  archivedKey = `acme/support/imap/INBOX/${uidValidity}/${uid}`;
  const [row] = await waitFor(
    async () => {
      const rows = await w.rows<{ id: string }>("SELECT id FROM messages WHERE message_key = $1", [archivedKey]);
      return rows.length ? rows : undefined;
    },
    { timeoutMs: 30_000, what: () => `archived\n${w.system.dump()}` },
  );
  assert.deepEqual(await w.emlOf(archivedKey), raw);
  await waitFor(async () => (await w.rows("SELECT 1 FROM session_events e JOIN sessions s ON s.id = e.session_id WHERE s.message_id = $1 AND e.state = 'offered'", [row!.id])).length > 0, {
    timeoutMs: 20_000,
    what: () => `offered\n${w.system.dump()}`,
  });
  await waitFor(async () => (await w.dovecot.flagsOf(SUPPORT)).get(uid)?.includes("\\Seen") ?? false, { timeoutMs: 20_000, what: () => `seen\n${w.system.dump()}` });

  const before = w.smtp.messages.length;
  await w.requestSend({ commandId: "reply-lp-0001", tenant: "acme", mailbox: "support", kind: "reply", original: archivedKey, to: ["ann@customer.example"], text: "Done." });
  const [sent] = (await w.smtp.waitForMessages(before + 1, 30_000)).slice(before);
  assert.match(sent!.raw.toString("latin1"), /Subject: Re: Least privilege/);
  // The reply is archived as part of the conversation (archiver reads smtp-sender's object).
  await waitFor(async () => (await w.rows("SELECT 1 FROM messages WHERE message_key = $1", ["acme/support/sent/reply-lp-0001"])).length > 0, {
    timeoutMs: 20_000,
    what: () => `reply archived\n${w.system.dump()}`,
  });
  const [sends] = await w.rows<{ raw_object: string }>("SELECT raw_object FROM sends WHERE command_id = 'reply-lp-0001'");
  rawObject = sends!.raw_object;
  assert.deepEqual(w.bus!.nats.violations(), [], "every right a service used was granted");
});

test("a stranger without a user cannot connect at all", async () => {
  await assert.rejects(connectNats({ url: w.bus!.nats.url, ...tls(), name: "stranger", user: "stranger", password: "guess" }), /Authorization Violation|AUTHORIZATION_VIOLATION|authorization/i);
  await assert.rejects(connectNats({ url: w.bus!.nats.url, ...tls(), name: "anonymous" }), /Authorization Violation|AUTHORIZATION_VIOLATION|authorization/i);
});

for (const [user, service, tenant] of [
  ["asd-bridge", "asd-bridge", undefined],
  ["archiver", "archiver", undefined],
  ["asd-bridge-acme", "asd-bridge", "acme"],
  ["archiver-acme", "archiver", "acme"],
] as const) {
  test(`${user} can neither ask for a credential nor read another service's replies or the credential requests`, async () => {
    const nc = await as(user, service, tenant);
    const received: string[] = [];
    try {
      await assert.rejects(
        nc.request(w.names.subjects.credentialRequest("acme", "support"), JSON.stringify({ version: "v1", purpose: "imap", tenant: "acme", mailbox: "support" }), { timeout: 5_000 }),
        /permissions violation|Permissions Violation/i,
      );
      const errors: Error[] = [];
      for (const subject of [`${inboxPrefix("imap-poller")}.>`, `${inboxPrefix("smtp-sender")}.>`, "_INBOX.>", w.names.subjects.wildcard.credentialRequest()]) {
        const sub = nc.subscribe(subject, {
          callback: (error, msg) => {
            if (error) errors.push(error);
            else received.push(new TextDecoder().decode(msg.data));
          },
        });
        void sub;
      }
      // Make the poller ask for its credential while the subscriptions stand: a fresh IMAP login.
      await w.system.stopService("imap-poller");
      w.system.startService("imap-poller");
      await w.mailboxReady();
      await waitFor(() => errors.length >= 4, { timeoutMs: 10_000, what: `four refused subscriptions (got ${errors.map((e) => e.message).join("; ")})` });
      for (const e of errors) assert.match(e.message, /permissions violation/i);
      assert.ok(!received.some((r) => r.includes(SUPPORT_PASSWORD)), "no password received");
      assert.deepEqual(received, []);
    } finally {
      await nc.close();
    }
  });
}

for (const [user, service, tenant] of [
  ["asd-bridge", "asd-bridge", undefined],
  ["asd-bridge-acme", "asd-bridge", "acme"],
] as const) {
  test(`${user} cannot read the raw mail or the poller's cursors`, async () => {
    const nc = await as(user, service, tenant);
    try {
      await assert.rejects(
        (async () => {
          const store = await openObjectStore(nc, w.names.buckets.rawMail);
          await store.get(rawObject);
        })(),
        /permissions violation|timeout/i,
      );
      await assert.rejects(
        (async () => {
          const kv = await openKv(nc, w.names.buckets.cursors);
          await kv.get(w.names.mailboxKey("acme", "support"));
        })(),
        /permissions violation|timeout/i,
      );
      // Nor by the JetStream API directly: reading the raw-mail stream's messages.
      await assert.rejects(nc.request(`$JS.API.STREAM.MSG.GET.OBJ_${w.names.buckets.rawMail}`, JSON.stringify({ seq: 1 }), { timeout: 5_000 }), /permissions violation/i);
    } finally {
      await nc.close();
    }
  });
}

test("a per-tenant user may command only its own tenant's mailboxes; nothing it is refused reaches the stream", async () => {
  for (const [user, service] of [["asd-bridge-acme", "asd-bridge"], ["archiver-acme", "archiver"]] as const) {
    const nc = await as(user, service, "acme");
    try {
      const js = jetStreamOf(nc);
      const command = (tenant: string, mailbox: string, id: string) => ({ version: "v1", commandId: id, tenant, mailbox, kind: "new", to: ["x@evil.test"], cc: [], bcc: [], subject: "hi", text: "hi", requestedAt: new Date().toISOString() });
      await assert.rejects(publishJson(js, w.names.subjects.mailSend("globex", "sales"), command("globex", "sales", `${user}-cross`), { msgId: `${user}-cross` }), /permissions violation/i);
      // Its own tenant's subject is allowed (the smtp-sender then sends it through the sink).
      await publishJson(js, w.names.subjects.mailSend("acme", "support"), command("acme", "support", `${user}-own-0001`), { msgId: `${user}-own-0001` });
      // Nor may it answer for token-service or forge a session of the other tenant.
      await assert.rejects(publishJson(js, w.names.subjects.sessionOffered("globex", "sales"), { version: "v1" }, { msgId: `${user}-session` }), /permissions violation/i);
    } finally {
      await nc.close();
    }
  }
  const sent = await w.rows<{ command_id: string; tenant: string }>("SELECT command_id, tenant FROM sends WHERE command_id LIKE '%-cross'");
  assert.deepEqual(sent, []);
});
