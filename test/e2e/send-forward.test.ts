import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import { waitFor } from "@postroom/testkit";
import { CUSTOMER, LEGAL, SendWorld, SUPPORT } from "../support/send-world.js";

let w: SendWorld;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

// Three attachments of different kinds; the 15 MB one is random bytes so no compression or
// re-encoding could hide a corruption.
const attachments = [
  { filename: "invoice 4711.pdf", content: Buffer.concat([Buffer.from("%PDF-1.7\n"), randomBytes(200_000)]), contentType: "application/pdf" },
  { filename: "Größe & Maße.txt", content: Buffer.from("Breite: 12 cm\r\nHöhe: 7 cm\r\n", "utf8"), contentType: "text/plain; charset=utf-8" },
  { filename: "scan.bin", content: randomBytes(15 * 1024 * 1024), contentType: "application/octet-stream" },
];

let originalKey: string;

before(async () => {
  w = await SendWorld.create("sendfwd");
  await w.system.start();
  await w.mailboxReady();
  const raw = await new MailComposer({
    from: `Ann Customer <${CUSTOMER}>`,
    to: SUPPORT,
    subject: "Documents for claim 88",
    messageId: "<claim-88@customer.test>",
    text: "Please find the documents attached.",
    html: "<p>Please find the <b>documents</b> attached.</p>",
    attachments,
  })
    .compile()
    .build();
  originalKey = await w.archivedOriginal(raw, 90_000);
});

after(async () => {
  await w?.close();
});

test("a forward inline carries all three attachments (one 15 MB) from the archive, intact by hash", async () => {
  await w.requestSend({ commandId: "forward-claim-88-inline", kind: "forward", forwardAs: "inline", original: originalKey, to: [LEGAL], text: "Legal: please check claim 88." });
  const [received] = await w.waitForMail(LEGAL, (m) => m.includes("Fwd: Documents for claim 88"), 1, 90_000);
  const parsed = await simpleParser(received!);
  assert.equal(parsed.subject, "Fwd: Documents for claim 88");
  assert.match(parsed.text ?? "", /Legal: please check claim 88\.\n\n---------- Forwarded message ----------\nFrom: Ann Customer <ann@customer\.test>/);
  assert.match(parsed.html || "", /Please find the <b>documents<\/b> attached\./);
  const got = parsed.attachments.map((a) => ({ name: a.filename, sha: sha(a.content), size: a.size }));
  assert.deepEqual(
    got.sort((a, b) => a.sha.localeCompare(b.sha)),
    attachments.map((a) => ({ name: a.filename, sha: sha(a.content), size: a.content.length })).sort((a, b) => a.sha.localeCompare(b.sha)),
  );
  assert.deepEqual(parsed.references, "<claim-88@customer.test>", "the forward names the original for threading");
});

test("a forward as attachment carries the original message byte for byte, with its attachments inside", async () => {
  await w.requestSend({ commandId: "forward-claim-88-attached", kind: "forward", forwardAs: "attachment", original: originalKey, to: [LEGAL], text: "The original is attached." });
  const [received] = await w.waitForMail(LEGAL, (m) => m.includes("The original is attached."), 1, 90_000);
  // mailparser would open the attached message; cut the message/rfc822 part out of the raw bytes instead.
  const text = received!.toString("latin1");
  const boundary = /boundary="?([^";\r\n]+)"?/.exec(text)![1]!;
  const part = text.split(`--${boundary}`).find((p) => /^\r\nContent-Type: message\/rfc822/i.test(p));
  assert.ok(part, "a message/rfc822 part");
  assert.match(part, /Content-Disposition: attachment/i);
  const body = Buffer.from(part.slice(part.indexOf("\r\n\r\n") + 4).replace(/\r\n$/, ""), "latin1");
  const [row] = await w.rows<{ sha256: string }>("SELECT sha256 FROM messages WHERE message_key = $1", [originalKey]);
  assert.equal(sha(body), row!.sha256, "the attached message is the archived .eml, byte for byte");
  const attached = { content: body };
  const inner = await simpleParser(attached.content);
  assert.equal(inner.attachments.find((a) => a.filename === "scan.bin")?.content.length, 15 * 1024 * 1024);
});

test("a forward whose attachment file is gone from the archive fails with a clear reason instead of hanging, and sends nothing", async () => {
  const raw = await new MailComposer({
    from: CUSTOMER,
    to: SUPPORT,
    subject: "Photo of the damage",
    messageId: "<damage-photo@customer.test>",
    text: "See photo.",
    attachments: [{ filename: "damage.jpg", content: randomBytes(50_000), contentType: "image/jpeg" }],
  })
    .compile()
    .build();
  const key = await w.archivedOriginal(raw);
  const [part] = await w.rows<{ archive_path: string; stored_name: string }>(
    "SELECT m.archive_path, a.stored_name FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.message_key = $1",
    [key],
  );
  await rm(join(part!.archive_path, "parts", part!.stored_name));

  await w.requestSend({ commandId: "forward-missing-part", kind: "forward", forwardAs: "inline", original: key, to: [LEGAL], text: "FYI" });
  const [row] = await waitFor(
    async () => {
      const rows = await w.rows<{ state: string; last_error: string; attempts: number }>("SELECT state, last_error, attempts FROM sends WHERE command_id = $1", ["forward-missing-part"]);
      return rows[0]?.state === "failed" ? rows : undefined;
    },
    { timeoutMs: 20_000, what: () => `forward failed\n${w.system.dump()}` },
  );
  assert.match(row!.last_error, /an attachment of the original is missing from the archive .*damage.*: it cannot be forwarded/);
  assert.equal(row!.attempts, 0);
  assert.equal((await w.inbox(LEGAL)).filter((m) => m.toString("latin1").includes("Photo of the damage")).length, 0);
});
