import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { importSoftdial, parseConfig, SoftdialImportError, type PostroomConfig } from "../index.js";

// A copy of Sytel's published example as extended in /work/shared/samples (placeholder values only).
const SAMPLE = new URL("./fixtures/softdial-config.xml", import.meta.url);

/** The EmailConfig of Sytel's published example, as a base that tests change one field at a time. */
const BASE: Record<string, string> = {
  UseBasicAuth: "true",
  UseAzureBusinessAuth: "false",
  AzureBusinessAuthClientId: "",
  AzureBusinessAuthTenantId: "",
  AzureBusinessAuthSecret: "",
  LogsPath: "C:\\logs\\Email",
  SmtpServer: "smtp.example.com",
  SmtpPort: "587",
  ImapServer: "imap.example.com",
  ImapPort: "993",
  PopServer: "pop.example.com",
  PopPort: "995",
  EmailAccount: "support",
  AccountDomain: "example.com",
  EmailAccountPass: "mailbox-pass-1",
  CC: "",
  BCC: "",
  DataSourceName: "SoftdialHistory",
  DataSourceUser: "history_user",
  DataSourcePass: "db-pass-1",
  ControllerIp: "10.0.0.5",
  EmailDiskSpace: "100",
  DiskSpaceWarningLimit: "20",
  EmailAlert: "",
  SendEmailAlert: "false",
  EmailInboxFolder: "C:\\Softdial\\EmailInbox",
  EmailCheckInterval: "10",
  SleepBeforeSendNewIc: "10",
  AnswerEmails: "true",
  ForwardEmails: "false",
};

interface CampaignSpec {
  tenantID?: string;
  name?: string;
  className?: string;
  fields?: Record<string, string>;
}

function campaign({ tenantID = "default", name = "Support", className = "InboundEmailImap", fields = {} }: CampaignSpec): string {
  const body = Object.entries({ ...BASE, ...fields })
    .map(([k, v]) => `      <${k}>${v}</${k}>`)
    .join("\n");
  return `<Campaign tenantID="${tenantID}" name="${name}">
  <className>${className}</className>
  <UserParams><![CDATA[
    <EmailConfig>
${body}
    </EmailConfig>
  ]]></UserParams>
</Campaign>`;
}

function workflow(...campaigns: string[]): string {
  return `<?xml version="1.0" encoding="utf-8"?>\n<Workflow>\n<Campaigns>\n${campaigns.join("\n")}\n</Campaigns>\n</Workflow>\n`;
}

/** Imports and returns the configuration as the services would load it. */
function importOne(spec: CampaignSpec = {}) {
  const result = importSoftdial(workflow(campaign(spec)), { envFileName: "postroom.env" });
  const config = parseConfig(result.yaml);
  const raw = parse(result.yaml) as { tenants: { mailboxes: Record<string, unknown>[] }[] };
  return { ...result, config, raw, mailbox: config.tenants[0]!.mailboxes[0]!, tenant: config.tenants[0]! };
}

describe("importSoftdial: the sample config.xml", () => {
  it("converts into a configuration that validates, with both campaigns as mailboxes of their tenants", async () => {
    const xml = await readFile(SAMPLE, "utf8");
    const result = importSoftdial(xml, { envFileName: "postroom.env" });
    const config: PostroomConfig = parseConfig(result.yaml);
    assert.deepEqual(
      config.tenants.map((t) => [t.id, t.mailboxes.map((m) => m.id)]),
      [
        ["default", ["support"]],
        ["contoso", ["billing"]],
      ],
    );
    for (const secret of ["abcd efgh ijkl mnop", "Xy8Q~example-secret-value-not-the-secret-id", "history-password"]) {
      assert.ok(!result.yaml.includes(secret), "secret value is in the YAML");
      assert.ok(Object.values(result.env).includes(secret), "secret value is missing from the env file");
    }
    assert.ok(result.assumptions.some((a) => a.includes("C:\\Softdial\\WebServer\\www\\EmailInbox")));
    assert.ok(result.warnings.some((w) => /ODBC/.test(w)));
  });
});

describe("importSoftdial: field mapping", () => {
  it("EmailAccount + AccountDomain → address", () => {
    assert.equal(importOne({ fields: { EmailAccount: "support.desk", AccountDomain: "gmail.com" } }).mailbox.address, "support.desk@gmail.com");
  });

  it("UseBasicAuth + EmailAccountPass → password auth whose secret is in the env file", () => {
    const { mailbox, env, yaml } = importOne({ fields: { EmailAccountPass: "abcd efgh ijkl mnop" } });
    assert.equal(mailbox.auth.type, "password");
    assert.ok(mailbox.auth.type === "password" && mailbox.auth.password.startsWith("env:"));
    const name = mailbox.auth.type === "password" ? mailbox.auth.password.slice(4) : "";
    assert.equal(env[name], "abcd efgh ijkl mnop");
    assert.ok(!yaml.includes("abcd efgh"));
  });

  it("UseAzureBusinessAuth + AzureBusinessAuthClientId/TenantId/Secret → microsoft365 auth in the global cloud", () => {
    const { mailbox, env, yaml } = importOne({
      fields: {
        UseBasicAuth: "false",
        UseAzureBusinessAuth: "true",
        AzureBusinessAuthClientId: "061851f7-08c0-40bf-99c1-ebd489c11f16",
        AzureBusinessAuthTenantId: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        AzureBusinessAuthSecret: "Xy8Q~azure-secret",
        EmailAccountPass: "unused-pass",
      },
    });
    assert.ok(mailbox.auth.type === "microsoft365");
    assert.equal(mailbox.auth.clientId, "061851f7-08c0-40bf-99c1-ebd489c11f16");
    assert.equal(mailbox.auth.tenantId, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0");
    assert.equal(mailbox.auth.cloud, "global");
    assert.equal(env[mailbox.auth.clientSecret!.slice(4)], "Xy8Q~azure-secret");
    assert.ok(!yaml.includes("Xy8Q~azure-secret"));
    assert.ok(!Object.values(env).includes("unused-pass"), "the unused basic password is not carried over");
  });

  it("UseBasicAuth on an Office 365 SMTP host without Azure fields keeps the password and warns with the date and the fix", () => {
    const { mailbox, warnings, env } = importOne({ fields: { SmtpServer: "smtp.office365.com", SmtpPort: "587" } });
    assert.equal(mailbox.auth.type, "password");
    assert.equal(mailbox.smtp?.auth, undefined, "SMTP keeps the mailbox's password");
    const w = warnings.find((x) => x.includes("smtp.office365.com"));
    assert.match(w ?? "", /end of December 2026/);
    assert.match(w ?? "", /550 5\.7\.30/);
    assert.match(w ?? "", /smtp\.auth: \{ type: microsoft365/);
    assert.ok(Object.values(env).includes("mailbox-pass-1"));
  });

  it("UseBasicAuth on an Office 365 SMTP host with the campaign's Azure fields sends over OAuth, with the app's secret in the env file", () => {
    const { mailbox, warnings, env, yaml } = importOne({
      fields: {
        SmtpServer: "smtp.office365.com",
        AzureBusinessAuthClientId: "061851f7-08c0-40bf-99c1-ebd489c11f16",
        AzureBusinessAuthTenantId: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        AzureBusinessAuthSecret: "Xy8Q~smtp-secret",
      },
    });
    assert.equal(mailbox.auth.type, "password", "reading keeps what UseBasicAuth asked for");
    const smtpAuth = mailbox.smtp?.auth;
    assert.ok(smtpAuth?.type === "microsoft365");
    assert.equal(smtpAuth.clientId, "061851f7-08c0-40bf-99c1-ebd489c11f16");
    assert.equal(env[smtpAuth.clientSecret!.slice(4)], "Xy8Q~smtp-secret");
    assert.ok(!yaml.includes("Xy8Q~smtp-secret"));
    assert.match(warnings.find((w) => /switched to OAuth/.test(w)) ?? "", /end of December 2026.*SMTP\.SendAsApp/);
  });

  it("UseBasicAuth and UseAzureBusinessAuth on Office 365: SMTP inherits the OAuth app, said as an assumption", () => {
    const { mailbox, assumptions } = importOne({
      fields: {
        SmtpServer: "smtp.office365.com",
        UseAzureBusinessAuth: "true",
        AzureBusinessAuthClientId: "061851f7-08c0-40bf-99c1-ebd489c11f16",
        AzureBusinessAuthTenantId: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        AzureBusinessAuthSecret: "Xy8Q~azure-secret",
      },
    });
    assert.equal(mailbox.auth.type, "microsoft365");
    assert.equal(mailbox.smtp?.auth, undefined);
    assert.ok(assumptions.some((a) => /OAuth too.*SMTP\.SendAsApp/.test(a)));
  });

  it("UseBasicAuth on another SMTP host says nothing about Exchange", () => {
    const { warnings } = importOne({});
    assert.ok(!warnings.some((w) => /December 2026/.test(w)));
  });

  it("warns about an Azure secret that looks like a Secret ID and a multi-tenant alias", () => {
    const { warnings } = importSoftdial(workflow(campaign({
      fields: {
        UseAzureBusinessAuth: "true",
        AzureBusinessAuthClientId: "061851f7-08c0-40bf-99c1-ebd489c11f16",
        AzureBusinessAuthTenantId: "common",
        AzureBusinessAuthSecret: "7d6c5b4a-3f2e-4d1c-9b0a-1f2e3d4c5b6a",
      },
    })), { envFileName: "postroom.env" });
    assert.ok(warnings.some((w) => /Secret ID/.test(w)));
    assert.ok(warnings.some((w) => /multi-tenant alias/.test(w)));
  });

  it("LogsPath (Windows) → logs.path on Linux, with the assumption printed", () => {
    const { config, assumptions } = importOne({ fields: { LogsPath: "C:\\logs\\Email" } });
    assert.equal(config.logs.path, "/var/log/postroom");
    assert.ok(assumptions.some((a) => a.includes("C:\\logs\\Email")));
  });

  it("SmtpServer/SmtpPort → smtp host, port and TLS mode", () => {
    assert.deepEqual(
      [importOne({ fields: { SmtpServer: "smtp.office365.com", SmtpPort: "587" } }).mailbox.smtp].map((s) => [s?.host, s?.port, s?.tls])[0],
      ["smtp.office365.com", 587, "starttls"],
    );
    assert.equal(importOne({ fields: { SmtpPort: "465" } }).mailbox.smtp?.tls, "implicit");
  });

  it("ImapServer/ImapPort → inbound IMAP for InboundEmailImap, Pop* unused", () => {
    const { mailbox, assumptions } = importOne({ fields: { ImapServer: "imap.gmail.com", ImapPort: "993" } });
    assert.deepEqual([mailbox.inbound.protocol, mailbox.inbound.host, mailbox.inbound.port, mailbox.inbound.tls], ["imap", "imap.gmail.com", 993, "implicit"]);
    assert.ok(assumptions.some((a) => /PopServer\/PopPort are not used/.test(a)));
    assert.equal(importOne({ fields: { ImapPort: "143" } }).mailbox.inbound.tls, "starttls");
  });

  it("PopServer/PopPort → inbound pop3 for a POP workflow class", () => {
    const { mailbox } = importOne({ className: "InboundEmailPop", fields: { PopServer: "pop.gmail.com", PopPort: "995" } });
    assert.deepEqual([mailbox.inbound.protocol, mailbox.inbound.host, mailbox.inbound.port, mailbox.inbound.tls], ["pop3", "pop.gmail.com", 995, "implicit"]);
  });

  it("an unknown className is a warning, and IMAP is assumed", () => {
    const { mailbox, warnings } = importOne({ className: "SomethingElse" });
    assert.equal(mailbox.inbound.protocol, "imap");
    assert.ok(warnings.some((w) => /className "SomethingElse"/.test(w)));
  });

  it("CC and BCC (comma-separated) → defaultCc and defaultBcc", () => {
    const { mailbox } = importOne({ fields: { CC: "team.lead@example.com, quality@example.com", BCC: "archive@example.com" } });
    assert.deepEqual(mailbox.defaultCc, ["team.lead@example.com", "quality@example.com"]);
    assert.deepEqual(mailbox.defaultBcc, ["archive@example.com"]);
  });

  it("DataSourceName/User/Pass → placeholder database URL with a warning, password in the env file", () => {
    const { config, env, warnings, yaml } = importOne({ fields: { DataSourceName: "History", DataSourceUser: "hist", DataSourcePass: "db-secret-x" } });
    assert.equal(config.database.url, "postgres://hist@127.0.0.1:5432/postroom");
    assert.ok(warnings.some((w) => w.includes('"History"') && /ODBC/.test(w)));
    assert.equal(env.PGPASSWORD, "db-secret-x");
    assert.ok(!yaml.includes("db-secret-x"));
  });

  it("ControllerIp → the tenant's Softdial ACD on port 6502 (ASCII), or the port it names with that port's encoding", () => {
    const { tenant } = importOne({ fields: { ControllerIp: "10.20.0.15" } });
    assert.deepEqual(tenant.acd, { type: "softdial", host: "10.20.0.15", port: 6502, switchId: "postroom", encoding: "ascii", causes: {}, ackTimeoutSeconds: 10 });
    const unicode = importOne({ fields: { ControllerIp: "10.20.0.15:6500" } }).tenant.acd;
    assert.deepEqual(unicode, { type: "softdial", host: "10.20.0.15", port: 6500, switchId: "postroom", encoding: "utf16le", causes: {}, ackTimeoutSeconds: 10 });
    assert.deepEqual(importOne({ fields: { ControllerIp: "" } }).tenant.acd, { type: "builtin" });
  });

  it("EmailDiskSpace, DiskSpaceWarningLimit, EmailAlert, SendEmailAlert → archive quota and alerts", () => {
    const { config } = importOne({ fields: { EmailDiskSpace: "250", DiskSpaceWarningLimit: "15", EmailAlert: "it-ops@example.com", SendEmailAlert: "true" } });
    assert.equal(config.archive.quotaGb, 250);
    assert.equal(config.archive.warnPercentLeft, 15);
    assert.deepEqual(config.archive.alertRecipients, ["it-ops@example.com"]);
    assert.equal(config.archive.sendAlerts, true);
  });

  it("EmailInboxFolder (Windows) → a Linux archive path, with the assumption printed", () => {
    const { config, assumptions } = importOne({ fields: { EmailInboxFolder: "C:\\Softdial\\WebServer\\www\\EmailInbox" } });
    assert.equal(config.archive.path, "/var/lib/postroom/archive");
    assert.ok(assumptions.some((a) => a.includes("C:\\Softdial\\WebServer\\www\\EmailInbox") && a.includes("/var/lib/postroom/archive")));
  });

  it("EmailCheckInterval → inbound.checkIntervalSeconds; SleepBeforeSendNewIc → offerPauseSeconds", () => {
    const { mailbox } = importOne({ fields: { EmailCheckInterval: "30", SleepBeforeSendNewIc: "5" } });
    assert.equal(mailbox.inbound.checkIntervalSeconds, 30);
    assert.equal(mailbox.offerPauseSeconds, 5);
  });

  it("AnswerEmails and ForwardEmails → agentsMayAnswer and agentsMayForward", () => {
    const a = importOne({ fields: { AnswerEmails: "false", ForwardEmails: "true" } }).mailbox;
    assert.deepEqual([a.agentsMayAnswer, a.agentsMayForward], [false, true]);
    const b = importOne({ fields: { AnswerEmails: "true", ForwardEmails: "false" } }).mailbox;
    assert.deepEqual([b.agentsMayAnswer, b.agentsMayForward], [true, false]);
  });
});

describe("importSoftdial: campaigns and tenants", () => {
  it("finds campaigns wherever they are, groups one tenantID into one tenant, derives valid ids", () => {
    const xml = `<Root><Site><Workflow>${campaign({ tenantID: "ACME Corp", name: "Customer Service (UK)" })}</Workflow></Site>
      <Other><Deep>${campaign({ tenantID: "ACME Corp", name: "Sales", fields: { EmailAccount: "sales" } })}</Deep></Other></Root>`;
    const config = parseConfig(importSoftdial(xml, { envFileName: "postroom.env" }).yaml);
    assert.equal(config.tenants.length, 1);
    assert.equal(config.tenants[0]!.id, "acme-corp");
    assert.equal(config.tenants[0]!.name, "ACME Corp");
    assert.deepEqual(config.tenants[0]!.mailboxes.map((m) => m.id), ["customer-service-uk", "sales"]);
  });

  it("gives archive overrides to the campaigns whose quota or folder differ", () => {
    const xml = workflow(
      campaign({ name: "A" }),
      campaign({ name: "B", fields: { EmailAccount: "b", EmailDiskSpace: "250", EmailInboxFolder: "D:\\EmailInbox\\Billing" } }),
    );
    const result = importSoftdial(xml, { envFileName: "postroom.env" });
    const [a, b] = parseConfig(result.yaml).tenants[0]!.mailboxes;
    assert.equal(a?.archive, undefined);
    assert.deepEqual(b?.archive, { path: "/var/lib/postroom/archive-billing", quotaGb: 250 });
  });

  it("lists unknown EmailConfig elements as warnings", () => {
    const { warnings } = importOne({ fields: { UseSsl: "true" } });
    assert.ok(warnings.some((w) => w.includes("<UseSsl>") && w.includes('campaign "Support"')));
  });

  it("keeps two campaigns with the same name apart", () => {
    const xml = workflow(campaign({ name: "Support" }), campaign({ name: "support", fields: { EmailAccount: "other" } }));
    const result = importSoftdial(xml, { envFileName: "postroom.env" });
    assert.deepEqual(parseConfig(result.yaml).tenants[0]!.mailboxes.map((m) => m.id), ["support", "support-2"]);
    assert.equal(Object.keys(result.env).filter((k) => k.endsWith("_PASSWORD")).length, 2);
  });
});

describe("importSoftdial: malformed input", () => {
  it("reports malformed XML with line, column and the likely cause", () => {
    const xml = workflow(campaign({})).replace("<className>InboundEmailImap</className>", "<className>InboundEmailImap</classname>");
    assert.throws(
      () => importSoftdial(xml, { envFileName: "postroom.env" }),
      (e: unknown) => {
        assert.ok(e instanceof SoftdialImportError);
        const line = xml.split("\n").findIndex((l) => l.includes("</classname>")) + 1;
        assert.equal(e.position?.line, line);
        assert.equal(typeof e.position?.column, "number");
        assert.match(e.message, new RegExp(`line ${line}, column \\d+`));
        assert.match(e.message, /likely cause/);
        return true;
      },
    );
  });

  it("reports a malformed EmailConfig inside CDATA with the campaign name and its line in the file", () => {
    const xml = workflow(campaign({ name: "Billing", fields: { EmailAccountPass: "a&b" } }));
    assert.throws(
      () => importSoftdial(xml, { envFileName: "postroom.env" }),
      (e: unknown) => {
        assert.ok(e instanceof SoftdialImportError);
        assert.equal(e.campaign, "Billing");
        const line = xml.split("\n").findIndex((l) => l.includes("a&b")) + 1;
        assert.equal(e.position?.line, line);
        assert.match(e.message, /campaign "Billing"/);
        assert.match(e.message, /&amp;/);
        return true;
      },
    );
  });

  it("refuses a file with no email campaign", () => {
    assert.throws(() => importSoftdial("<Workflow><Campaigns/></Workflow>", { envFileName: "postroom.env" }), /no email campaign/);
  });
});
