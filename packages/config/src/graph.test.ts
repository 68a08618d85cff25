import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateConfig } from "./index.js";

const head = `version: 1
database:
  url: postgres://postgres@127.0.0.1:5432/postroom
archive:
  path: /var/lib/postroom/archive
tenants:
  - id: demo
    mailboxes:
`;

/** One mailbox (the YAML under `- `); `top` adds top-level settings. */
function one(mailbox: string, top = ""): ReturnType<typeof validateConfig> {
  const lines = mailbox.trim().split("\n");
  return validateConfig(top + head + lines.map((l, i) => `${i === 0 ? "      - " : "        "}${l}`).join("\n") + "\n");
}

const m365 = (cloud = "global") =>
  `auth: { type: microsoft365, tenantId: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0, clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16, clientSecret: env:M365_SECRET, cloud: ${cloud} }`;
const delegated = "auth: { type: microsoft-delegated, clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16 }";

describe("Microsoft Graph mailboxes", () => {
  it("inbound graph and outbound graph: no host to write; smtp's limits kept with Graph's host", () => {
    const r = one(`id: support\naddress: support@contoso.com\ninbound: { protocol: graph }\noutbound: graph\n${m365()}`);
    assert.deepEqual([r.errors, r.warnings], [[], []]);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.deepEqual([mb.inbound.protocol, mb.inbound.host, mb.outbound, mb.graph.saveToSentItems, mb.graph.pageSize], ["graph", "graph.microsoft.com", "graph", true, 50]);
    assert.deepEqual([mb.smtp?.host, mb.smtp?.port, mb.smtp?.ratePerMinute, mb.smtp?.maxRecipients], ["graph.microsoft.com", 443, 30, 50]);
  });

  it("the national cloud picks Graph's host; graph.url overrides it", () => {
    const gov = one(`id: support\naddress: support@contoso.us\ninbound: { protocol: graph }\n${m365("usgov")}`);
    assert.equal(gov.config!.tenants[0]!.mailboxes[0]!.inbound.host, "graph.microsoft.us");
    const local = one(`id: support\naddress: support@contoso.com\ninbound: { protocol: graph }\ngraph: { url: "https://127.0.0.1:8443" }\n${m365()}`);
    assert.equal(local.config!.tenants[0]!.mailboxes[0]!.inbound.host, "127.0.0.1");
  });

  it("a delegated Graph mailbox asks for Graph's delegated scopes by default", () => {
    const r = one(`id: me\naddress: me@outlook.com\ninbound: { protocol: graph }\noutbound: graph\n${delegated}`, "tokenStore: { key: env:POSTROOM_TOKEN_KEY }\n");
    assert.deepEqual(r.errors, []);
    const auth = r.config!.tenants[0]!.mailboxes[0]!.auth;
    assert.equal(auth.type, "microsoft-delegated");
    if (auth.type === "microsoft-delegated") assert.deepEqual(auth.scopes, ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send", "offline_access"]);
  });

  it("a password cannot open Graph: the error names auth.type and the two auth types that can", () => {
    const r = one("id: support\naddress: support@contoso.com\ninbound: { protocol: graph }\nauth: { type: password, password: env:PW }");
    const e = r.errors.find((x) => x.path.endsWith("auth.type"));
    assert.ok(e, JSON.stringify(r.errors));
    assert.match(e.message, /Graph needs a Microsoft sign-in/);
    assert.match(e.fix ?? "", /microsoft365.*microsoft-delegated/);
  });

  it("a delegated sign-in cannot serve Graph and SMTP at once: the error says to choose one", () => {
    const r = one(`id: me\naddress: me@outlook.com\ninbound: { protocol: graph }\nsmtp: { host: smtp-mail.outlook.com }\n${delegated}`);
    const e = r.errors.find((x) => x.path.endsWith("outbound"));
    assert.ok(e, JSON.stringify(r.errors));
    assert.match(e.fix ?? "", /outbound: graph/);
  });
});
