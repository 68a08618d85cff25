import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildMailCorpus, waitFor } from "@postroom/testkit";
import { Harness } from "./test-harness.js";

// One archiver whose parser can finish nothing: 1 ms per parse (less than a worker needs to
// start), and nothing over 300 bytes is parsed at all.
let h: Harness;

before(async () => {
  h = await Harness.create("parselimits", () => undefined, { parseLimits: { timeoutMs: 1, maxBytes: 300 } });
  await h.startArchiver();
});

after(async () => {
  await h?.close();
});

test("a message whose parse times out is archived raw, marked with the parse error, and still offered", async () => {
  const raw = Buffer.from("From: ann@customer.example\r\nSubject: short\r\nMessage-ID: <short@customer.example>\r\n\r\nhi\r\n");
  const key = await h.deliver(raw, { uid: 1 });
  const c = await waitFor(() => h.confirmations.find((x) => x.messageKey === key), { timeoutMs: 30_000, what: "confirmation of the unparsed message" });
  assert.match(c.parseError ?? "", /parsing took longer than 1 ms/);
  assert.equal(c.offer, true, "still offered (asd-bridge shows the parse error as a warning)");
  assert.equal(c.rfcMessageId, `<${c.sha256.slice(0, 32)}@derived.postroom.invalid>`, "unparsed, so a derived id");
  const [row] = await h.rows<{ parse_error: string | null; archive_path: string }>("SELECT parse_error, archive_path FROM messages WHERE message_key = $1", [key]);
  assert.match(row!.parse_error ?? "", /longer than 1 ms/);
  assert.ok((await readFile(join(row!.archive_path, "message.eml"))).equals(raw), "the raw .eml is archived all the same");
  assert.deepEqual(await readdir(join(row!.archive_path, "parts")), [], "no half-written parts");
  const meta = JSON.parse(await readFile(join(row!.archive_path, "meta.json"), "utf8")) as { parseError: string };
  assert.match(meta.parseError, /longer than 1 ms/);
  assert.ok(h.archiver!.stats.parseTimeouts >= 1);
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
