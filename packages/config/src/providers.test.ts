import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EXCHANGE_BASIC_SMTP_END, redactConfig, validateConfig } from "./index.js";

const head = `version: 1
database:
  url: postgres://postgres@127.0.0.1:5432/postroom
archive:
  path: /var/lib/postroom/archive
tenants:
  - id: demo
    mailboxes:
`;

/** A config with one mailbox, written as the YAML lines under `- `; `top` adds top-level settings. */
function one(mailbox: string, top = ""): ReturnType<typeof validateConfig> {
  const lines = mailbox.trim().split("\n");
  return validateConfig(top + head + lines.map((l, i) => `${i === 0 ? "      - " : "        "}${l}`).join("\n") + "\n");
}

const m365 = "auth: { type: microsoft365, tenantId: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0, clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16, clientSecret: env:M365_SECRET }";

describe("provider presets", () => {
  it("office365 in five lines: IMAP on outlook.office365.com:993, SMTP on smtp.office365.com:587 STARTTLS", () => {
    const r = one(`id: support\naddress: support@contoso.com\nprovider: office365\n${m365}`);
    assert.deepEqual([r.errors, r.warnings], [[], []]);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.deepEqual([mb.inbound.protocol, mb.inbound.host, mb.inbound.port, mb.inbound.tls], ["imap", "outlook.office365.com", 993, "implicit"]);
    assert.deepEqual([mb.smtp?.host, mb.smtp?.port, mb.smtp?.tls, mb.smtp?.ratePerMinute], ["smtp.office365.com", 587, "starttls", 30]);
  });

  it("gmail over POP3 with an app password: pop.gmail.com:995 and smtp.gmail.com:587", () => {
    const r = one("id: sales\naddress: sales.desk@gmail.com\nprovider: gmail\ninbound: { protocol: pop3 }\nauth: { type: password, password: env:GMAIL_APP_PASSWORD }");
    assert.deepEqual(r.errors, []);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.deepEqual([mb.inbound.host, mb.inbound.port, mb.smtp?.host, mb.smtp?.port], ["pop.gmail.com", 995, "smtp.gmail.com", 587]);
  });

  it("what the operator writes wins over the preset; another TLS mode drops the preset's port", () => {
    const r = one(`id: support\naddress: support@contoso.com\nprovider: office365\ninbound: { host: imap.proxy.internal, tls: starttls }\nsmtp: { host: relay.internal, port: 2525 }\n${m365}`);
    assert.deepEqual(r.errors, []);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.deepEqual([mb.inbound.host, mb.inbound.port, mb.inbound.tls, mb.smtp?.host, mb.smtp?.port], ["imap.proxy.internal", undefined, "starttls", "relay.internal", 2525]);
  });

  it("an auth type the provider refuses is an error naming what works", () => {
    const outlook = one("id: home\naddress: someone@outlook.com\nprovider: outlook-com\nauth: { type: password, password: env:PW }");
    assert.deepEqual(outlook.errors.map((e) => e.path), ["tenants[0].mailboxes[0].auth.type"]);
    assert.match(outlook.errors[0]!.message, /Outlook\.com.*cannot be read with auth type "password"/);
    assert.match(outlook.errors[0]!.fix ?? "", /16 September 2024/);
    const exchange = one("id: support\naddress: support@contoso.com\nprovider: office365\nauth: { type: password, password: env:PW }");
    assert.deepEqual(exchange.errors.map((e) => e.path), ["tenants[0].mailboxes[0].auth.type"], "one error: reading is what fails first");
    const gmail = one("id: g\naddress: g@gmail.com\nprovider: gmail\nauth: { type: google-service-account, keyFile: file:/run/key.json }");
    assert.match(gmail.errors[0]?.message ?? "", /Gmail \(personal\) mailboxes cannot be read/);
  });

  it("without a provider, a missing inbound host or protocol is an error that offers the provider as the fix", () => {
    const r = one("id: x\naddress: x@example.com\ninbound: { protocol: imap }\nauth: { type: password, password: env:PW }\nagentsMayAnswer: false");
    assert.deepEqual(r.errors.map((e) => [e.path, e.message]), [["tenants[0].mailboxes[0].inbound.host", "is missing"]]);
    assert.match(r.errors[0]!.fix ?? "", /provider: outlook-com \| office365 \| gmail \| google-workspace/);
    const none = one("id: x\naddress: x@example.com\nauth: { type: password, password: env:PW }\nagentsMayAnswer: false");
    assert.deepEqual(none.errors.map((e) => e.path).sort(), ["tenants[0].mailboxes[0].inbound.host", "tenants[0].mailboxes[0].inbound.protocol"]);
    const unknown = one("id: x\naddress: x@example.com\nprovider: yahoo\nauth: { type: password, password: env:PW }");
    assert.deepEqual(unknown.errors.map((e) => e.path), ["tenants[0].mailboxes[0].provider"]);
  });
});

describe("ready for the end of basic SMTP AUTH", () => {
  it("config check warns for every Microsoft 365 mailbox sending with a password on an Exchange Online host, with the date and the fix", () => {
    const text = `${head}      - id: a
        address: a@contoso.com
        provider: office365
        ${m365}
        smtp: { auth: { type: password, password: env:A_PW } }
      - id: b
        address: b@contoso.com
        inbound: { protocol: imap, host: imap.contoso.com }
        auth: { type: password, password: env:B_PW }
        smtp: { host: smtp.office365.com, port: 587 }
      - id: c
        address: c@contoso.com
        inbound: { protocol: imap, host: imap.contoso.com }
        auth: { type: password, password: env:C_PW }
        smtp: { host: smtp.contoso.com }
      - id: d
        address: d@contoso.com
        provider: office365
        ${m365}
`;
    const r = validateConfig(text);
    assert.deepEqual(r.errors, []);
    const basic = r.warnings.filter((w) => /December 2026/.test(w.message));
    assert.deepEqual(basic.map((w) => w.path), ["tenants[0].mailboxes[0].smtp.auth", "tenants[0].mailboxes[1].auth"], "c sends elsewhere, d sends with OAuth");
    for (const w of basic) {
      assert.match(w.message, /smtp\.office365\.com with a password.*end of December 2026.*550 5\.7\.30/);
      assert.equal(w.fix, EXCHANGE_BASIC_SMTP_END.fix);
      assert.ok(w.line !== undefined);
    }
    assert.match(EXCHANGE_BASIC_SMTP_END.fix, /SMTP\.SendAsApp.*Add-MailboxPermission.*postroom auth sign-in/);
  });

  it("warns for password logins to Outlook.com and for password IMAP to Exchange Online", () => {
    const r = one("id: x\naddress: x@outlook.com\ninbound: { protocol: imap, host: outlook.office365.com }\nauth: { type: password, password: env:PW }\nsmtp: { host: smtp-mail.outlook.com }");
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.warnings.map((w) => w.path).sort(), ["tenants[0].mailboxes[0].auth", "tenants[0].mailboxes[0].auth"]);
    assert.ok(r.warnings.some((w) => /16 September 2024/.test(w.message)));
    assert.ok(r.warnings.some((w) => /no longer accepts passwords over IMAP and POP/.test(w.message)));
  });
});

describe("delegated auth in the config", () => {
  it("an Outlook.com mailbox is five lines; the preset gives tenant consumers and Exchange's delegated scopes", () => {
    const text = `${head}      - id: home\n        address: shop.owner@outlook.com\n        provider: outlook-com\n        auth: { type: microsoft-delegated, clientId: 7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f }\ntokenStore: { key: env:POSTROOM_TOKEN_KEY }\n`;
    const r = validateConfig(text);
    assert.deepEqual([r.errors, r.warnings], [[], []]);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.ok(mb.auth.type === "microsoft-delegated");
    assert.equal(mb.auth.tenant, "consumers");
    assert.deepEqual(mb.auth.scopes, ["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send", "offline_access"]);
    assert.deepEqual([mb.inbound.host, mb.smtp?.host], ["outlook.office365.com", "smtp-mail.outlook.com"]);
  });

  it("without a provider the tenant is organizations; without a tokenStore it is an error naming the fix", () => {
    const r = one("id: w\naddress: w@contoso.com\ninbound: { protocol: imap, host: outlook.office365.com }\nauth: { type: microsoft-delegated, clientId: 7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f }\nagentsMayAnswer: false");
    assert.deepEqual(r.errors.map((e) => e.path), ["tokenStore"]);
    assert.match(r.errors[0]!.fix ?? "", /tokenStore: \{ key: env:POSTROOM_TOKEN_KEY \}/);
    const ok = validateConfig(`${head}      - id: w\n        address: w@contoso.com\n        inbound: { protocol: imap, host: outlook.office365.com }\n        auth: { type: microsoft-delegated, clientId: 7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f, tenant: common }\n        agentsMayAnswer: false\ntokenStore: { key: env:K, previousKeys: [env:OLD_K] }\n`);
    assert.deepEqual(ok.errors, []);
    assert.deepEqual(ok.warnings.map((w) => w.path), ["tenants[0].mailboxes[0].auth.tenant"]);
  });

  it("a Gmail mailbox signs in with google-delegated: the Gmail scope by default, a tokenStore required, the client id and secret checked", () => {
    const gmail = "id: g\naddress: shop.owner@gmail.com\nprovider: gmail\nauth: { type: google-delegated, clientId: 123-abc.apps.googleusercontent.com, clientSecret: env:GOOGLE_SECRET }";
    const r = validateConfig(`${head}      - ${gmail.replace(/\n/g, "\n        ")}\ntokenStore: { key: env:POSTROOM_TOKEN_KEY }\n`);
    assert.deepEqual([r.errors, r.warnings], [[], []]);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.ok(mb.auth.type === "google-delegated");
    assert.deepEqual(mb.auth.scopes, ["https://mail.google.com/"]);
    assert.deepEqual([mb.inbound.host, mb.smtp?.host], ["imap.gmail.com", "smtp.gmail.com"]);
    assert.deepEqual(one(gmail).errors.map((e) => e.path), ["tokenStore"]);
    const bad = one("id: g\naddress: g@gmail.com\nprovider: gmail\nauth: { type: google-delegated, clientId: 123-abc, clientSecret: plain-secret-in-the-file }");
    assert.ok(bad.errors.some((e) => e.path === "tenants[0].mailboxes[0].auth.clientId" && /apps\.googleusercontent\.com/.test(e.message)), JSON.stringify(bad.errors));
  });

  it("the store's keys are redacted when printed", () => {
    const printed = redactConfig({ tokenStore: { key: "inline-key-material-0123456789abcdef", previousKeys: ["older-inline-key-material-0123456789", "env:OLD"] }, nats: { tls: { key: "/etc/postroom/client.key" } } });
    assert.deepEqual(printed, { tokenStore: { key: "***", previousKeys: ["***", "env:OLD"] }, nats: { tls: { key: "/etc/postroom/client.key" } } });
  });
});

/** The app-only auth line above, in a given Microsoft cloud. */
const m365In = (cloud = "global") => m365.replace(/ }$/, `, cloud: ${cloud} }`);
const delegated = "auth: { type: microsoft-delegated, clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16 }";

describe("Microsoft Graph mailboxes", () => {
  it("inbound graph and outbound graph: no host to write; smtp's limits kept with Graph's host", () => {
    const r = one(`id: support\naddress: support@contoso.com\ninbound: { protocol: graph }\noutbound: graph\n${m365In()}`);
    assert.deepEqual([r.errors, r.warnings], [[], []]);
    const mb = r.config!.tenants[0]!.mailboxes[0]!;
    assert.deepEqual([mb.inbound.protocol, mb.inbound.host, mb.outbound, mb.graph.saveToSentItems, mb.graph.pageSize], ["graph", "graph.microsoft.com", "graph", true, 50]);
    assert.deepEqual([mb.smtp?.host, mb.smtp?.port, mb.smtp?.ratePerMinute, mb.smtp?.maxRecipients], ["graph.microsoft.com", 443, 30, 50]);
  });

  it("the national cloud picks Graph's host; graph.url overrides it", () => {
    const gov = one(`id: support\naddress: support@contoso.us\ninbound: { protocol: graph }\n${m365In("usgov")}`);
    assert.equal(gov.config!.tenants[0]!.mailboxes[0]!.inbound.host, "graph.microsoft.us");
    const local = one(`id: support\naddress: support@contoso.com\ninbound: { protocol: graph }\ngraph: { url: "https://127.0.0.1:8443" }\n${m365In()}`);
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
