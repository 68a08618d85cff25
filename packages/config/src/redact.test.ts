import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { stringify } from "yaml";
import { parseConfig, redactConfig } from "./index.js";

const literals = {
  password: "pw-literal-1",
  smtpPassword: "pw-literal-2",
  clientSecret: "cs-literal-3",
  certificate: "-----BEGIN CERTIFICATE-----literal-4",
  privateKey: "-----BEGIN PRIVATE KEY-----literal-5",
  keyFile: '{"private_key":"literal-6"}',
  signingSecret: "whsec-literal-7",
  agentPassword: "agent-literal-8",
  dbPassword: "db-literal-9",
  natsPassword: "nats-literal-10",
};

const config = parseConfig(`version: 1
nats: { url: "nats://app:${literals.natsPassword}@nats-1:4222,nats://app:${literals.natsPassword}@nats-2:4222" }
database: { url: "postgres://postroom:${literals.dbPassword}@db:5432/postroom" }
archive: { path: /var/lib/postroom/archive }
tenants:
  - id: t1
    acd: { type: webhook, url: "https://acd.example.com/hook", signingSecret: "${literals.signingSecret}" }
    agents: [{ id: a1, password: "${literals.agentPassword}" }]
    mailboxes:
      - id: m1
        address: m1@example.com
        inbound: { protocol: imap, host: imap.example.com }
        auth: { type: password, password: "${literals.password}" }
        smtp:
          host: smtp.example.com
          auth: { type: password, password: "${literals.smtpPassword}" }
      - id: m2
        address: m2@example.com
        inbound: { protocol: imap, host: outlook.office365.com }
        auth:
          type: microsoft365
          tenantId: contoso.onmicrosoft.com
          clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16
          clientSecret: "${literals.clientSecret}"
          certificate: { certificate: "${literals.certificate}", privateKey: "${literals.privateKey}" }
      - id: m3
        address: m3@example.com
        inbound: { protocol: imap, host: imap.gmail.com }
        auth: { type: google-service-account, keyFile: '${literals.keyFile}' }
  - id: t2
    mailboxes:
      - id: m1
        address: m4@example.com
        inbound: { protocol: pop3, host: pop.example.com }
        auth: { type: password, password: env:T2_PASSWORD }
        smtp: { host: smtp.example.com, auth: { type: password, password: "file:/run/secrets/smtp" } }
`);

describe("redactConfig", () => {
  it("never lets an inline secret through, in any secret field", () => {
    const printed = stringify(redactConfig(config)) + JSON.stringify(redactConfig(config));
    for (const [field, literal] of Object.entries(literals)) {
      assert.ok(!printed.includes(literal), `${field} leaked`);
      assert.ok(!printed.includes(literal.slice(-9)), `${field} partly leaked`);
    }
  });

  it("shows inline secrets as *** and references as themselves", () => {
    const r = redactConfig(config);
    const [m1, m2, m3] = r.tenants[0]!.mailboxes;
    assert.deepEqual(m1?.auth, { type: "password", password: "***" });
    assert.equal(m1?.smtp?.auth?.type === "password" && m1.smtp.auth.password, "***");
    assert.ok(m2?.auth.type === "microsoft365");
    assert.equal(m2.auth.clientSecret, "***");
    assert.deepEqual(m2.auth.certificate, { certificate: "***", privateKey: "***" });
    assert.equal(m3?.auth.type === "google-service-account" && m3.auth.keyFile, "***");
    assert.equal(r.tenants[0]!.acd.type === "webhook" && r.tenants[0]!.acd.signingSecret, "***");
    assert.equal(r.tenants[0]!.agents[0]?.password, "***");
    assert.equal(r.database.url, "postgres://postroom:***@db:5432/postroom");
    assert.equal(r.nats.url, "nats://app:***@nats-1:4222,nats://app:***@nats-2:4222");
    const t2 = r.tenants[1]!.mailboxes[0]!;
    assert.deepEqual(t2.auth, { type: "password", password: "env:T2_PASSWORD" });
    assert.equal(t2.smtp?.auth?.type === "password" && t2.smtp.auth.password, "file:/run/secrets/smtp");
  });

  it("redacts the services' database users: an inline password as ***, references as themselves", () => {
    const r = redactConfig({
      database: {
        url: "postgres://owner@db/postroom",
        users: { archiver: { user: "a_login", password: "inline-db-secret" }, "asd-bridge": { url: "env:BRIDGE_URL" }, "smtp-sender": { user: "s_login", password: "env:PG_SENDER" } },
      },
    });
    assert.deepEqual(r.database.users, { archiver: { user: "a_login", password: "***" }, "asd-bridge": { url: "env:BRIDGE_URL" }, "smtp-sender": { user: "s_login", password: "env:PG_SENDER" } });
  });

  it("leaves the original untouched and non-secret fields as they were", () => {
    const r = redactConfig(config);
    assert.equal(config.tenants[0]!.mailboxes[0]!.auth.type === "password" && config.tenants[0]!.mailboxes[0]!.auth.password, literals.password);
    assert.equal(r.tenants[0]!.acd.type === "webhook" && r.tenants[0]!.acd.url, "https://acd.example.com/hook");
    assert.equal(r.tenants[0]!.mailboxes[1]!.address, "m2@example.com");
  });
});
