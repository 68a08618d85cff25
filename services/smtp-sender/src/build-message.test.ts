import assert from "node:assert/strict";
import { test } from "node:test";
import { SendRequested } from "@postroom/contracts";
import { Mailbox as MailboxConfig } from "@postroom/config";
import { buildMessage } from "./sender.js";

const mailbox = MailboxConfig.parse({
  id: "support",
  address: "support@acme.test",
  displayName: "ACME Support",
  inbound: { protocol: "imap", host: "127.0.0.1" },
  auth: { type: "password", password: "env:X" },
  smtp: { host: "127.0.0.1" },
  defaultCc: ["team@acme.test"],
  defaultBcc: ["records@acme.test"],
});
const command = (over: Record<string, unknown>) =>
  SendRequested.parse({ version: "v1", commandId: "cmd-00000001", tenant: "acme", mailbox: "support", kind: "reply", to: [], text: "Thanks", requestedAt: new Date().toISOString(), ...over });
const original = {
  rfcMessageId: "<o@c.example>",
  references: ["<a@c.example>"],
  subject: "AW: Order 42",
  from: "ann@c.example",
  fromName: "Ann",
  replyTo: [],
  to: ["support@acme.test", "bob@c.example"],
  cc: [],
  date: new Date("2026-11-02T10:00:00Z"),
  text: "Where is it?",
  html: "<p>Where is it?</p>",
  archivePath: "/archive/acme/support/x",
  attachments: [{ name: "photo.jpg", path: "/archive/acme/support/x/parts/photo.jpg", contentType: "image/jpeg", contentId: null, inline: false }],
};

test("a reply goes to the customer, threads on the original, quotes it in text and HTML, with the campaign's CC and BCC", () => {
  const { options, envelope, inReplyTo, references } = buildMessage(command({}), mailbox, "<m@acme.test>", original);
  assert.deepEqual(options.to, ["ann@c.example"]);
  assert.deepEqual(options.cc, ["team@acme.test"]);
  assert.deepEqual(options.bcc, ["records@acme.test"]);
  assert.equal(options.subject, "Re: Order 42");
  assert.equal(inReplyTo, "<o@c.example>");
  assert.deepEqual(references, ["<a@c.example>", "<o@c.example>"]);
  assert.match(String(options.text), /^Thanks\n\nOn .*Ann <ann@c\.example> wrote:\n> Where is it\?$/);
  assert.match(String(options.html), /<blockquote type="cite"[^>]*><p>Where is it\?<\/p><\/blockquote>/);
  assert.deepEqual(envelope.to, ["ann@c.example", "team@acme.test", "records@acme.test"]);
  assert.deepEqual(options.attachments, [], "a reply does not carry the original's attachments");
});

test("reply all adds the original's other recipients but never the mailbox itself", () => {
  const { options } = buildMessage(command({ kind: "reply-all" }), mailbox, "<m@acme.test>", original);
  assert.deepEqual(options.to, ["ann@c.example", "bob@c.example"]);
});

test("a reply-all whose command names recipients (the agent saw and confirmed them) gets exactly those, nothing added", () => {
  const { options } = buildMessage(command({ kind: "reply-all", to: ["orders@c.example"], cc: ["bob@c.example"] }), mailbox, "<m@acme.test>", original);
  assert.deepEqual(options.to, ["orders@c.example"]);
  assert.deepEqual((options.cc as string[]).filter((a) => !mailbox.defaultCc.includes(a)), ["bob@c.example"]);
});

test("a forward inline carries the original's attachments as files streamed from the archive", () => {
  const { options, inReplyTo } = buildMessage(command({ kind: "forward", to: ["legal@acme.test"], forwardAs: "inline" }), mailbox, "<m@acme.test>", original);
  assert.equal(options.subject, "Fwd: Order 42");
  assert.equal(inReplyTo, null);
  assert.match(String(options.text), /---------- Forwarded message ----------\nFrom: Ann <ann@c\.example>/);
  assert.deepEqual(options.attachments, [{ filename: "photo.jpg", path: "/archive/acme/support/x/parts/photo.jpg", contentType: "image/jpeg" }]);
});

test("a forward as attachment attaches the archived message.eml as message/rfc822", () => {
  const { options } = buildMessage(command({ kind: "forward", to: ["legal@acme.test"], forwardAs: "attachment" }), mailbox, "<m@acme.test>", original);
  assert.deepEqual(options.attachments, [{ filename: "AW_ Order 42.eml", path: "/archive/acme/support/x/message.eml", contentType: "message/rfc822", contentDisposition: "attachment" }]);
});

test("alerts are marked Auto-Submitted so auto-responders stay quiet", () => {
  const { options } = buildMessage(command({ kind: "alert", to: ["ops@acme.test"], subject: "Disk 90% full" }), mailbox, "<m@acme.test>", undefined);
  assert.deepEqual(options.headers, { "X-Postroom-Loop": "acme/support", "Auto-Submitted": "auto-generated" });
  assert.equal(options.subject, "Disk 90% full");
});

test("every message carries the mailbox's loop stamp, and replies are not marked automatic", () => {
  for (const kind of ["reply", "reply-all", "forward", "new"] as const) {
    const { options } = buildMessage(command({ kind, to: ["x@c.example"], subject: "s" }), mailbox, "<m@acme.test>", kind === "new" ? undefined : original);
    assert.deepEqual(options.headers, { "X-Postroom-Loop": "acme/support" }, kind);
  }
});

test("a hostile original's control characters in the subject are cleaned, and unusable addresses are left out of reply all", () => {
  const hostile = { ...original, subject: "Order\r\nBcc: x@evil.example", cc: ["undisclosed-recipients:;", "eve@c.example"] };
  const { options } = buildMessage(command({ kind: "reply-all" }), mailbox, "<m@acme.test>", hostile);
  assert.equal(options.subject, "Re: Order Bcc: x@evil.example");
  assert.deepEqual(options.cc, ["eve@c.example", "team@acme.test"]);
});
