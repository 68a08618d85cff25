import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";
import { names, type Names } from "./names.js";
import { deploymentUsers, inboxPrefix, natsAuthorizationBlock, natsPasswordVariable, natsPermissions, SERVICES, type ServiceName } from "./permissions.js";

// The golden file is the reviewed list of every right every service has, for the default
// namespace and tenant acme with mailbox support. A change to a subject, stream, consumer or
// bucket shows up here as a diff; regenerate with POSTROOM_UPDATE_GOLDEN=1 and review it.
const GOLDEN = new URL("./permissions.golden.conf", import.meta.url);
const TENANTS = [{ id: "acme", mailboxes: [{ id: "support" }] }];

function block(n: Names): string {
  return natsAuthorizationBlock(n, deploymentUsers(TENANTS, false).map((u) => ({ ...u, password: `$${natsPasswordVariable(u.user)}` })), TENANTS);
}

test("the generated authorization block is the reviewed golden file", () => {
  const generated = block(names());
  if (process.env.POSTROOM_UPDATE_GOLDEN === "1") writeFileSync(GOLDEN, generated);
  assert.equal(generated, readFileSync(GOLDEN, "utf8"));
});

test("renaming a subject in contracts changes the permissions of exactly the services that use it", () => {
  const n = names();
  const renamed: Names = { ...n, subjects: { ...n.subjects, wildcard: { ...n.subjects.wildcard, mailSend: (t) => `postroom.${t ?? "*"}.mail.dispatch.*` } } };
  const allow = (x: Names, s: ServiceName) => natsPermissions(x, s, { tenants: TENANTS }).publish.allow;
  for (const s of ["archiver", "asd-bridge"] as const) {
    assert.ok(allow(n, s).includes("postroom.*.mail.send.*"), s);
    assert.ok(!allow(renamed, s).includes("postroom.*.mail.send.*"), s);
    assert.ok(allow(renamed, s).includes("postroom.*.mail.dispatch.*"), s);
  }
  for (const s of ["token-service", "imap-poller", "smtp-sender"] as const) assert.deepEqual(allow(renamed, s), allow(n, s), s);
  assert.notEqual(block(renamed), block(n));
});

test("only token-service answers credential requests, only the poller and smtp-sender ask, and each reads only its own inbox", () => {
  const n = names();
  for (const s of SERVICES) {
    const p = natsPermissions(n, s, { tenants: TENANTS });
    const all = [...p.publish.allow, ...p.subscribe.allow];
    assert.ok(!all.some((x) => x === ">" || x.endsWith("$JS.API.>") || x === "_INBOX.>" || x === "$JS.>"), `${s} has no blanket right`);
    assert.equal(p.subscribe.allow.includes(n.subjects.wildcard.credentialRequest()), s === "token-service", `${s} subscribes to credential requests`);
    assert.equal(p.publish.allow.includes(n.subjects.wildcard.credentialRequest()), s === "imap-poller" || s === "smtp-sender", `${s} asks for credentials`);
    assert.equal(p.allow_responses === true, s === "token-service");
    assert.deepEqual(p.subscribe.allow.filter((x) => x.startsWith("_INBOX")), [`${inboxPrefix(s)}.>`], `${s} reads only its own replies`);
    const rawMail = all.some((x) => x.includes(n.buckets.rawMail));
    assert.equal(rawMail, ["imap-poller", "archiver", "smtp-sender"].includes(s), `${s} and the raw mail`);
    assert.equal(all.some((x) => x.includes(n.buckets.sendReceipts)), s === "smtp-sender", `${s} and the send receipts`);
  }
});

test("a per-tenant user's rights name only its tenant", () => {
  const n = names();
  const two = [...TENANTS, { id: "globex", mailboxes: [{ id: "sales" }] }];
  for (const s of ["imap-poller", "archiver", "asd-bridge", "smtp-sender"] as const) {
    const p = natsPermissions(n, s, { tenant: "acme", tenants: two });
    const all = [...p.publish.allow, ...p.subscribe.allow];
    assert.ok(!all.some((x) => x.includes("globex")), `${s}-acme names nothing of globex`);
    assert.ok(!all.some((x) => x.startsWith("postroom.*.")), `${s}-acme has no every-tenant subject`);
    assert.deepEqual(p.subscribe.allow.filter((x) => x.startsWith("_INBOX")), [`${inboxPrefix(s, "acme")}.>`]);
  }
});
