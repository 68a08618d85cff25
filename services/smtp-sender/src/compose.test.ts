import assert from "node:assert/strict";
import { test } from "node:test";
import { assertAddress, assertSafeHeader, forwardSubject, mergeRecipients, messageIdFor, quoteHtml, quoteText, replyReferences, replySubject } from "./compose.js";

test("reply subjects never stack prefixes, in any common language", () => {
  assert.equal(replySubject("Order 42"), "Re: Order 42");
  assert.equal(replySubject("Re: Order 42"), "Re: Order 42");
  assert.equal(replySubject("RE: Re: AW: Order 42"), "Re: Order 42");
  assert.equal(replySubject("SV: Fw: Order 42"), "Re: Order 42");
  assert.equal(forwardSubject("Fwd: Order 42"), "Fwd: Order 42");
});

test("the Message-ID is stable per command and differs between commands", () => {
  assert.equal(messageIdFor("cmd-1", "support@example.com"), messageIdFor("cmd-1", "support@example.com"));
  assert.notEqual(messageIdFor("cmd-1", "support@example.com"), messageIdFor("cmd-2", "support@example.com"));
  assert.match(messageIdFor("cmd-1", "support@example.com"), /^<[0-9a-f]{32}\.postroom@example\.com>$/);
});

test("references end with the original and keep its chain", () => {
  assert.deepEqual(replyReferences({ rfcMessageId: "<c@x>", references: ["<a@x>", "<b@x>"] }), ["<a@x>", "<b@x>", "<c@x>"]);
});

test("recipients are de-duplicated across To, CC and BCC", () => {
  assert.deepEqual(mergeRecipients(["A@x.com"], ["a@x.com", "b@x.com"], ["b@x.com", "c@x.com"]), {
    to: ["A@x.com"],
    cc: ["b@x.com"],
    bcc: ["c@x.com"],
  });
});

test("header values with line breaks are refused", () => {
  assert.throws(() => assertSafeHeader("subject", "Hi\r\nBcc: evil@x.com"), /header injection/);
  assert.doesNotThrow(() => assertSafeHeader("subject", "Grüße\tand tabs"));
});

test("addresses must be bare and well formed; line breaks are refused as injection", () => {
  assert.doesNotThrow(() => assertAddress("to", "ann.o'neil+orders@customer.example"));
  assert.throws(() => assertAddress("to", "ann@customer.example\r\nBcc: x@evil.example"), /header injection/);
  assert.throws(() => assertAddress("to", "Ann <ann@customer.example>"), /not a valid e-mail address/);
  assert.throws(() => assertAddress("cc", "ann@localhost"), /not a valid/);
  assert.throws(() => assertAddress("cc", "ann@@customer.example"), /not a valid/);
});

test("the original is quoted line by line in text and inside a cite blockquote in HTML, escaped", () => {
  const original = { from: "ann@c.example", fromName: "Ann", date: new Date("2026-11-02T10:00:00Z"), text: "Hello\r\n\r\n<order> 4711", html: null };
  assert.equal(quoteText(original), "On Mon, 02 Nov 2026 10:00:00 GMT, Ann <ann@c.example> wrote:\n> Hello\n>\n> <order> 4711");
  const html = quoteHtml(original);
  assert.match(html, /<blockquote type="cite"/);
  assert.match(html, /&lt;order&gt; 4711/);
  assert.match(html, /Ann &lt;ann@c\.example&gt; wrote:/);
});
