import assert from "node:assert/strict";
import { test } from "node:test";
import { assertSafeHeader, forwardSubject, mergeRecipients, messageIdFor, replyReferences, replySubject } from "./compose.js";

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
