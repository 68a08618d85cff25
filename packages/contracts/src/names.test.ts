import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidTokenError, mailboxOfSubject, names } from "./names.js";
import { MailReceived, messageKey, type MailboxStatus } from "./messages.js";
import { isStalled, leaseKey, replicaKey, replicaKeys } from "./ingestion.js";
import { streamDefinitions } from "./streams.js";

// Golden lists: a rename of any subject, stream, consumer or bucket shows up here as a reviewed diff.

test("every subject, for tenant acme and mailbox support", () => {
  const s = names().subjects;
  assert.deepEqual(
    {
      mailReceived: s.mailReceived("acme", "support"),
      mailArchived: s.mailArchived("acme", "support"),
      mailSend: s.mailSend("acme", "support"),
      mailSent: s.mailSent("acme", "support"),
      mailSendFailed: s.mailSendFailed("acme", "support"),
      sessionOffered: s.sessionOffered("acme", "support"),
      sessionAssigned: s.sessionAssigned("acme", "support"),
      sessionCompleted: s.sessionCompleted("acme", "support"),
      diskAlert: s.diskAlert("acme", "support"),
      loopAlert: s.loopAlert("acme", "support"),
      mailboxStatus: s.mailboxStatus("acme", "support"),
      credentialRequest: s.credentialRequest("acme", "support"),
      credentialRejected: s.credentialRejected("acme", "support"),
    },
    {
      mailReceived: "postroom.acme.mail.received.support",
      mailArchived: "postroom.acme.mail.archived.support",
      mailSend: "postroom.acme.mail.send.support",
      mailSent: "postroom.acme.mail.sent.support",
      mailSendFailed: "postroom.acme.mail.send-failed.support",
      sessionOffered: "postroom.acme.session.offered.support",
      sessionAssigned: "postroom.acme.session.assigned.support",
      sessionCompleted: "postroom.acme.session.completed.support",
      diskAlert: "postroom.acme.alert.disk.support",
      loopAlert: "postroom.acme.alert.loop.support",
      mailboxStatus: "postroom.acme.mailbox.status.support",
      credentialRequest: "postroom.acme.auth.credential.support",
      credentialRejected: "postroom.acme.auth.rejected.support",
    },
  );
});

test("every stream with its subjects and retention", () => {
  const defs = streamDefinitions(names());
  assert.deepEqual(
    defs.map((d) => [d.name, d.subjects, d.retention]),
    [
      ["POSTROOM_MAIL", ["postroom.*.mail.received.*", "postroom.*.mail.archived.*", "postroom.*.mail.sent.*", "postroom.*.mail.send-failed.*"], "limits"],
      ["POSTROOM_SEND_COMMANDS", ["postroom.*.mail.send.*"], "workqueue"],
      ["POSTROOM_SESSIONS", ["postroom.*.session.*.*"], "limits"],
      ["POSTROOM_ALERTS", ["postroom.*.alert.disk.*", "postroom.*.alert.loop.*"], "limits"],
    ],
  );
  assert.ok(defs.every((d) => d.duplicate_window === 120_000_000_000), "2-minute dedupe window by default");
  assert.ok(streamDefinitions(names(), { replicas: 3 }).every((d) => d.num_replicas === 3), "replicas are configurable");
});

test("streams never overlap, so each subject is stored once", () => {
  const all = streamDefinitions(names()).flatMap((d) => d.subjects);
  assert.equal(new Set(all).size, all.length);
});

test("consumers and buckets", () => {
  const n = names();
  assert.deepEqual(
    [
      n.consumers.archiverReceived(),
      n.consumers.archiverReceived("acme"),
      n.consumers.archiverSent(),
      n.consumers.asdBridgeArchived(),
      n.consumers.asdBridgeSent(),
      n.consumers.asdBridgeSendFailed("acme"),
      n.consumers.smtpSender(),
      n.consumers.pollerCommit("acme", "support"),
    ],
    ["archiver", "archiver-acme", "archiver-sent", "asd-bridge", "asd-bridge-sent", "asd-bridge-send-failed-acme", "smtp-sender", "imap-poller-acme-support"],
  );
  assert.deepEqual(Object.values(n.buckets), ["postroom-cursors", "postroom-leases", "postroom-mailbox-status", "postroom-control", "postroom-raw-mail", "postroom-ingested", "postroom-acd-status", "postroom-oauth-grants", "postroom-send-receipts"]);
});

test("mailbox status keys: the poller's entry and smtp-sender's entry beside it", () => {
  const n = names();
  assert.equal(n.mailboxKey("acme", "support"), "acme.support");
  assert.equal(n.mailboxSmtpKey("acme", "support"), "acme.support.smtp");
  assert.equal(n.mailboxAuthKey("acme", "support"), "acme.support.auth");
});

test("a tenant's ACD status has its own key in its own bucket", () => {
  const n = names();
  assert.equal(n.buckets.acdStatus, "postroom-acd-status");
  assert.equal(n.acdStatusKey("acme"), "acme");
  assert.throws(() => n.acdStatusKey("acme.support"), InvalidTokenError);
});

test("a namespace isolates every name (one per test file)", () => {
  const n = names("t1abc");
  assert.equal(n.subjects.mailReceived("acme", "support"), "t1abc.acme.mail.received.support");
  assert.equal(n.streams.mail, "T1ABC_MAIL");
  assert.equal(n.buckets.cursors, "t1abc-cursors");
});

test("ids that would break a subject are refused with a clear message", () => {
  assert.throws(() => names().subjects.mailReceived("acme", "support.desk"), InvalidTokenError);
  assert.throws(() => names().subjects.mailReceived("Acme", "support"), /lowercase/);
  assert.throws(() => names().subjects.mailReceived("acme", "*"), InvalidTokenError);
});

test("the message key is stable and distinguishes folders, UIDVALIDITY and POP3 UIDLs", () => {
  const imap = { protocol: "imap" as const, tenant: "acme", mailbox: "support", folder: "INBOX", uidValidity: 7, uid: 42 };
  assert.equal(messageKey(imap), "acme/support/imap/INBOX/7/42");
  assert.notEqual(messageKey(imap), messageKey({ ...imap, uidValidity: 8 }));
  assert.equal(messageKey({ protocol: "pop3", tenant: "acme", mailbox: "support", uidl: "a/b" }), "acme/support/pop3/a%2Fb");
});

test("payloads without version v1 are refused", () => {
  const good = {
    version: "v1",
    messageKey: "k",
    source: { protocol: "pop3", tenant: "acme", mailbox: "support", uidl: "x" },
    raw: { bucket: "b", name: "k", size: 1, sha256: "a".repeat(64) },
    receivedAt: "2026-11-28T10:00:00.000Z",
    fetchedAt: "2026-11-28T10:00:01.000Z",
    offer: true,
  };
  assert.equal(MailReceived.safeParse(good).success, true);
  assert.equal(MailReceived.safeParse({ ...good, version: "v2" }).success, false);
});

test("poller leases and replica heartbeats have their own keys in the leases bucket", () => {
  assert.equal(leaseKey("acme", "support"), "lease.acme.support");
  assert.equal(replicaKey("imap-poller-a1"), "replica.imap-poller-a1");
  assert.equal(replicaKeys, "replica.>");
});

test("a mailbox that has not completed a check within three intervals is stalled, unless it says why", () => {
  const base: MailboxStatus = {
    version: "v1", tenant: "acme", mailbox: "support", state: "idle", owner: "r1",
    lastCheckAt: "2026-11-28T10:00:00.000Z", lastMessageAt: null, backlog: 0, lastError: null,
    updatedAt: "2026-11-28T10:00:00.000Z",
  };
  assert.equal(isStalled(base, 60, new Date("2026-11-28T10:02:59.000Z")), false);
  assert.equal(isStalled(base, 60, new Date("2026-11-28T10:03:01.000Z")), true);
  assert.equal(isStalled({ ...base, state: "needs-admin" }, 60, new Date("2026-11-28T11:00:00.000Z")), false);
  assert.equal(isStalled({ ...base, lastCheckAt: null, startedAt: "2026-11-28T10:00:00.000Z" }, 10, new Date("2026-11-28T10:00:31.000Z")), true);
});

test("raw bytes outlive the events that point at them", async () => {
  const { RAW_MAIL_TTL_MS, MAIL_EVENTS_MAX_AGE_MS } = await import("./streams.js");
  assert.ok(RAW_MAIL_TTL_MS > MAIL_EVENTS_MAX_AGE_MS);
  const mail = streamDefinitions(names(), { mailMaxAgeMs: 365 * 24 * 3600 * 1000 }).find((d) => d.name === "POSTROOM_MAIL")!;
  assert.ok(mail.max_age <= RAW_MAIL_TTL_MS * 1_000_000, "a longer configured event age is capped at the raw bytes' TTL");
});

test("mailboxOfSubject reads tenant and mailbox only from a subject of exactly the expected kind", () => {
  const n = names("tns");
  const s = n.subjects;
  assert.deepEqual(mailboxOfSubject(s.credentialRequest, "tns.acme.auth.credential.support"), { tenant: "acme", mailbox: "support" });
  assert.deepEqual(mailboxOfSubject(s.mailSend, s.mailSend("globex", "sales")), { tenant: "globex", mailbox: "sales" });
  // Another kind, another namespace, extra or missing tokens, an unusable token: no match.
  for (const other of [
    "tns.acme.auth.rejected.support",
    "postroom.acme.auth.credential.support",
    "tns.acme.auth.credential.x.support",
    "tns.acme.credential.support",
    "tns.ACME.auth.credential.support",
    "tns.acme.auth.credential.*",
    "tns",
    "",
  ]) {
    assert.equal(mailboxOfSubject(s.credentialRequest, other), undefined, other);
  }
});
