import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildMailCorpus, waitFor } from "@postroom/testkit";
import { Harness } from "./test-harness.js";

// One archiver whose parser can finish nothing: 1 ms per parse, and nothing over 300 bytes is
// parsed at all.
let h: Harness;

before(async () => {
  h = await Harness.create("parselimits", () => undefined, { parseLimits: { timeoutMs: 1, maxBytes: 300 } });
  await h.startArchiver();
});

after(async () => {
  await h?.close();
});

test("a message whose parse times out is archived raw, marked with the parse error, and still offered", async () => {
  // Its own archiver: a 1 ms limit, and a message of 400 parts (about 1.5 MB) that no machine reads
  // and parses in 1 ms, even with the parse worker already warm (a tiny message sometimes made it).
  const slow = await Harness.create("parseslow", () => undefined, { parseLimits: { timeoutMs: 1, maxBytes: 64 * 1024 * 1024 } });
  try {
    await slow.startArchiver();
    const boundary = "part-boundary";
    const parts = Array.from({ length: 400 }, (_, i) => `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart ${i} ${"text ".repeat(700)}\r\n`);
    const raw = Buffer.from(
      `From: ann@customer.example\r\nSubject: slow\r\nMessage-ID: <slow@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n${parts.join("")}--${boundary}--\r\n`,
    );
    const key = await slow.deliver(raw, { uid: 1 });
    const c = await waitFor(() => slow.confirmations.find((x) => x.messageKey === key), { timeoutMs: 30_000, what: "confirmation of the unparsed message" });
    assert.match(c.parseError ?? "", /parsing took longer than 1 ms/);
    assert.equal(c.offer, true, "still offered (asd-bridge shows the parse error as a warning)");
    assert.equal(c.rfcMessageId, `<${c.sha256.slice(0, 32)}@derived.postroom.invalid>`, "unparsed, so a derived id");
    const [row] = await slow.rows<{ parse_error: string | null; archive_path: string }>("SELECT parse_error, archive_path FROM messages WHERE message_key = $1", [key]);
    assert.match(row!.parse_error ?? "", /longer than 1 ms/);
    assert.ok((await readFile(join(row!.archive_path, "message.eml"))).equals(raw), "the raw .eml is archived all the same");
    assert.deepEqual(await readdir(join(row!.archive_path, "parts")), [], "no half-written parts");
    const meta = JSON.parse(await readFile(join(row!.archive_path, "meta.json"), "utf8")) as { parseError: string };
    assert.match(meta.parseError, /longer than 1 ms/);
    assert.ok(slow.archiver!.stats.parseTimeouts >= 1);
  } finally {
    await slow.close();
  }
});

test("a message over the parse size limit is archived raw with the reason, and later messages still archive", async () => {
  const raw = buildMailCorpus({ bigAttachmentBytes: 2 * 1024 * 1024 }).find((m) => m.name === "large-attachment")!.raw;
  const key = await h.deliver(raw, { uid: 2 });
  const c = await waitFor(() => h.confirmations.find((x) => x.messageKey === key), { timeoutMs: 30_000, what: "confirmation of the oversized message" });
  assert.match(c.parseError ?? "", /exceeds the parse limit of 300 bytes/);
  const [row] = await h.rows<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [key]);
  assert.ok((await readFile(join(row!.archive_path, "message.eml"))).equals(raw));
  const next = await h.deliver(Buffer.from("Subject: next\r\n\r\nok\r\n"), { uid: 3 });
  await waitFor(() => h.confirmations.find((x) => x.messageKey === next), { timeoutMs: 30_000, what: "the next message archived" });
});

test("a message whose earlier parse attempts never finished (the archiver crashed in the parser) is archived raw instead of crashing it again", async () => {
  const raw = Buffer.from("From: ann@customer.example\r\nSubject: poison\r\n\r\nhi\r\n");
  const uid = 4;
  // What two crashes mid-parse leave behind: the attempt count, never cleared.
  const key = "acme/support/imap/INBOX/7/4";
  const { ParseAttempts } = await import("./parse-attempts.js");
  const attempts = new ParseAttempts(h.archiveRoot);
  await attempts.begin(key);
  await attempts.begin(key);
  assert.equal(await h.deliver(raw, { uid }), key);
  const c = await waitFor(() => h.confirmations.find((x) => x.messageKey === key), { timeoutMs: 30_000, what: "confirmation of the poison message" });
  assert.match(c.parseError ?? "", /2 earlier parse attempts never finished/);
  const [row] = await h.rows<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [key]);
  assert.ok((await readFile(join(row!.archive_path, "message.eml"))).equals(raw));
  assert.deepEqual(await readdir(join(h.archiveRoot, ".parse-attempts")), [], "the count is cleared once archived");
});

test("a message the parser cannot finish is still classified from its raw headers: our own address is a loop, the sender and date are kept", async () => {
  const raw = Buffer.from(
    `From: "ACME" <Support@ACME.test>\r\nTo: support@acme.test\r\nDate: Tue, 03 Mar 2026\r\n 10:15:00 +0100\r\nSubject: echo\r\n\r\n${"x".repeat(400)}\r\n`,
  );
  const key = await h.deliver(raw, { uid: 5 });
  const c = await waitFor(() => h.confirmations.find((x) => x.messageKey === key), { timeoutMs: 30_000, what: "confirmation of the unparsed loop" });
  assert.ok(c.parseError, "not parsed");
  assert.deepEqual([c.classification, c.classificationReason, c.from], ["loop", "From is the mailbox's own address support@acme.test", "support@acme.test"]);
  const [row] = await h.rows<{ from_address: string; date_header: Date | null; date_raw: string | null }>("SELECT from_address, date_header, date_raw FROM messages WHERE message_key = $1", [key]);
  assert.deepEqual([row!.from_address, row!.date_header?.toISOString(), row!.date_raw], ["support@acme.test", "2026-03-03T09:15:00.000Z", "Tue, 03 Mar 2026 10:15:00 +0100"]);
});
