import assert from "node:assert/strict";
import { test } from "node:test";
import { isValidAddress, replyRecipients } from "./recipients.js";

const original = { from: "ann@c.example", replyTo: [] as string[], to: ["support@acme.test", "bob@c.example"], cc: ["SUPPORT@acme.test", "eve@c.example", "Bob@c.example"] };

test("a reply goes to Reply-To when the customer set one, else to From", () => {
  assert.deepEqual(replyRecipients("reply", original, ["support@acme.test"]), { to: ["ann@c.example"], cc: [] });
  assert.deepEqual(replyRecipients("reply", { ...original, replyTo: ["Orders@C.example", "desk@c.example"] }, ["support@acme.test"]), { to: ["orders@c.example", "desk@c.example"], cc: [] });
});

test("reply all: Reply-To (or From) and the original's To in To, its CC in CC, each once, never the mailbox itself", () => {
  assert.deepEqual(replyRecipients("reply-all", original, ["support@acme.test"]), { to: ["ann@c.example", "bob@c.example"], cc: ["eve@c.example"] });
  assert.deepEqual(replyRecipients("reply-all", { ...original, replyTo: ["orders@c.example"] }, ["support@acme.test"]).to, ["orders@c.example", "bob@c.example"]);
  assert.deepEqual(replyRecipients("reply-all", { ...original, to: ["help@acme.test"] }, ["support@acme.test", "HELP@acme.test"]).to, ["ann@c.example"], "an alias of the mailbox is the mailbox");
});

test("addresses from a stranger's headers that cannot be sent to are left out; a garbage Reply-To falls back to From", () => {
  assert.deepEqual(replyRecipients("reply-all", { ...original, to: ["undisclosed-recipients:;", "bob@c.example"], cc: ["not an address"] }, ["support@acme.test"]), { to: ["ann@c.example", "bob@c.example"], cc: [] });
  assert.deepEqual(replyRecipients("reply", { ...original, replyTo: ["<>"] }, []).to, ["ann@c.example"]);
});

test("valid addresses are bare addr-specs without control characters", () => {
  assert.ok(isValidAddress("ann.o'neil+orders@customer.example"));
  for (const bad of ["Ann <ann@c.example>", "ann@localhost", "ann@@c.example", "ann@c.example\r\nBcc: x@e.example", ""]) assert.ok(!isValidAddress(bad), bad);
});
