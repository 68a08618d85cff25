import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseConfig, validateConfig } from "./index.js";

/** A valid configuration to break one field at a time. */
const valid = `version: 1
database:
  url: postgres://postgres@127.0.0.1:5432/postroom
archive:
  path: /var/lib/postroom/archive
tenants:
  - id: demo
    mailboxes:
      - id: support
        address: support@example.com
        inbound:
          protocol: imap
          host: imap.example.com
          port: 993
        auth:
          type: password
          password: env:SUPPORT_PASSWORD
        smtp:
          host: smtp.example.com
          port: 587
`;

function m365(auth: string): string {
  return valid.replace("          type: password\n          password: env:SUPPORT_PASSWORD\n", auth);
}

const find = <T extends { path: string }>(issues: T[], path: string): T | undefined => issues.find((i) => i.path === path);

describe("config validation", () => {
  it("warns about an alias that is another mailbox's address (its mail would be taken for a loop), and gives the classification defaults", () => {
    const two = valid.replace("        address: support@example.com\n", "        address: support@example.com\n        aliases: [help@example.com, SALES@example.com, support@example.com]\n") +
      valid.slice(valid.indexOf("      - id: support")).replace("id: support", "id: sales").replace("support@example.com", "sales@example.com");
    const result = validateConfig(two);
    assert.deepEqual(result.errors, []);
    assert.deepEqual(result.warnings.map((w) => w.path), ["tenants[0].mailboxes[0].aliases[1]", "tenants[0].mailboxes[0].aliases[2]"]);
    assert.match(find(result.warnings, "tenants[0].mailboxes[0].aliases[1]")!.message, /address of tenants\[0\]\.mailboxes\[1\].*taken for a loop/);
    const tenant = result.config!.tenants[0]!;
    assert.deepEqual(tenant.mailboxes[0]!.aliases, ["help@example.com", "SALES@example.com", "support@example.com"]);
    assert.deepEqual(tenant.classification, { human: "offer", autoReply: "archive", bounce: "archive", bulk: "flag", loop: "archive", loopBreaker: { maxMessages: 10, windowMinutes: 15 } });
    assert.deepEqual(validateConfig(valid.replace("tenants:\n  - id: demo\n", "tenants:\n  - id: demo\n    classification: { bulk: offer-ish }\n")).errors.map((e) => e.path), ["tenants[0].classification.bulk"]);
  });
  it("a Softdial ACD's encoding follows its port, and the wrong pair is a warning naming the fix", () => {
    const softdial = (acd: string) => valid.replace("tenants:\n  - id: demo\n", `tenants:\n  - id: demo\n    acd: ${acd}\n`);
    const plain = validateConfig(softdial("{ type: softdial, host: 10.0.0.5, port: 6500 }"));
    assert.deepEqual([plain.errors, plain.warnings], [[], []]);
    assert.equal(plain.config!.tenants[0]!.acd.type === "softdial" && plain.config!.tenants[0]!.acd.encoding, undefined, "left to the port: utf16le on 6500");
    const wrong = validateConfig(softdial("{ type: softdial, host: 10.0.0.5, port: 6500, encoding: ascii }"));
    assert.equal(find(wrong.warnings, "tenants[0].acd.encoding")?.fix, "remove encoding (port 6500 means utf16le), or use port 6502 for ASCII");
    assert.deepEqual(validateConfig(softdial("{ type: softdial, host: 10.0.0.5, causes: { spam: 1000 } }")).errors.map((e) => e.path), ["tenants[0].acd.causes.spam"]);
  });
  it("the recipient cap and the recipients a minute: defaults 50 and 100, a cap above the minute's allowance is a warning", () => {
    const smtp = validateConfig(valid).config!.tenants[0]!.mailboxes[0]!.smtp!;
    assert.deepEqual([smtp.maxRecipients, smtp.recipientsPerMinute], [50, 100]);
    const low = validateConfig(valid.replace("          port: 587\n", "          port: 587\n          recipientsPerMinute: 20\n"));
    assert.equal(find(low.warnings, "tenants[0].mailboxes[0].smtp.recipientsPerMinute")?.fix, "raise recipientsPerMinute to at least 50, or lower maxRecipients");
    assert.deepEqual(validateConfig(valid.replace("          port: 587\n", "          port: 587\n          maxRecipients: 0\n")).errors.map((e) => e.path), ["tenants[0].mailboxes[0].smtp.maxRecipients"]);
  });
  it("the agent API's login limits default to 5 / 10 / 50 / 15 minutes; an allowed host with a scheme or port is refused", () => {
    const api = validateConfig(valid).config!.agentApi;
    assert.deepEqual(api.login, { freeAttempts: 5, lockAfter: 10, addressLockAfter: 50, lockoutSeconds: 900 });
    assert.deepEqual([api.allowedHosts, api.trustedProxies], [undefined, []]);
    const bad = validateConfig(`${valid}agentApi: { allowedHosts: ["https://desk.example.com", "desk.example.com:8480"], trustedProxies: ["not-an-ip"] }\n`);
    assert.deepEqual(bad.errors.map((e) => e.path), ["agentApi.allowedHosts[0]", "agentApi.allowedHosts[1]", "agentApi.trustedProxies[0]"]);
    assert.deepEqual(validateConfig(`${valid}agentApi: { allowedHosts: [desk.example.com, "::1", "[fd00::1]", 10.0.0.5], trustedProxies: [10.0.0.0/8, "fd00::/8"] }\n`).errors, []);
  });
  it("accepts a valid configuration without errors or warnings", () => {
    const result = validateConfig(valid);
    assert.deepEqual(result.errors, []);
    assert.deepEqual(result.warnings, []);
    assert.equal(result.config?.tenants[0]?.mailboxes[0]?.inbound.tls, "implicit");
  });

  it("reports three different mistakes together, each with its path, line and a fix", () => {
    const text = valid
      .replace("port: 993", "port: 99300")
      .replace("address: support@example.com", "address: Support <support@example.com>")
      .replace("  - id: demo\n", "  - id: Demo Tenant\n");
    assert.throws(
      () => parseConfig(text, "postroom.yaml"),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.source, "postroom.yaml");
        const paths = e.issues.map((i) => i.path).sort();
        assert.deepEqual(paths, ["tenants[0].id", "tenants[0].mailboxes[0].address", "tenants[0].mailboxes[0].inbound.port"]);
        for (const issue of e.issues) {
          assert.ok(issue.fix, `${issue.path} has a fix`);
          assert.equal(typeof issue.line, "number");
        }
        assert.equal(find(e.issues, "tenants[0].mailboxes[0].inbound.port")?.line, 14);
        return true;
      },
    );
  });

  it("reports semantic errors alongside shape errors instead of one round later", () => {
    const text = valid.replace("port: 993", 'port: "993"').replace(
      "        smtp:",
      `      - id: support
        address: other@example.com
        inbound: { protocol: imap, host: imap.example.com }
        auth: { type: password, password: env:OTHER }
        smtp:`,
    );
    const { errors } = validateConfig(text);
    assert.ok(find(errors, "tenants[0].mailboxes[0].inbound.port"));
    assert.match(find(errors, "tenants[0].mailboxes[1].id")?.message ?? "", /duplicate mailbox id "support"/);
  });

  it("rejects duplicate tenant ids", () => {
    const text = `${valid}  - id: demo\n    mailboxes:\n${valid.split("    mailboxes:\n")[1]!.replace("support@", "sales@")}`;
    const { errors } = validateConfig(text);
    assert.match(find(errors, "tenants[1].id")?.message ?? "", /duplicate tenant id "demo"/);
  });

  it("rejects microsoft365 auth without a client secret or certificate", () => {
    const text = m365(
      "          type: microsoft365\n          tenantId: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\n          clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16\n",
    );
    const issue = find(validateConfig(text).errors, "tenants[0].mailboxes[0].auth");
    assert.match(issue?.message ?? "", /neither clientSecret nor certificate/);
    assert.match(issue?.fix ?? "", /clientSecret: env:/);
  });

  for (const alias of ["common", "consumers", "organizations"]) {
    it(`rejects tenantId "${alias}" and asks for the tenant GUID`, () => {
      const text = m365(
        `          type: microsoft365\n          tenantId: ${alias}\n          clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16\n          clientSecret: env:SECRET\n`,
      );
      const issue = find(validateConfig(text).errors, "tenants[0].mailboxes[0].auth.tenantId");
      assert.match(issue?.fix ?? "", /Directory \(tenant\) ID GUID/);
    });
  }

  it("warns that a GUID-shaped client secret is probably the Secret ID, without repeating it", () => {
    const secretId = "7d6c5b4a-3f2e-4d1c-9b0a-1f2e3d4c5b6a";
    const text = m365(
      `          type: microsoft365\n          tenantId: contoso.onmicrosoft.com\n          clientId: 061851f7-08c0-40bf-99c1-ebd489c11f16\n          clientSecret: ${secretId}\n`,
    );
    const result = validateConfig(text);
    assert.deepEqual(result.errors, []);
    const warning = find(result.warnings, "tenants[0].mailboxes[0].auth.clientSecret");
    assert.match(warning?.message ?? "", /Secret ID, not its Value/);
    assert.equal(warning?.severity, "warning");
    assert.ok(!JSON.stringify(result.warnings).includes(secretId));
  });

  it("warns about an inline secret and points at env:NAME, without repeating the secret", () => {
    const result = validateConfig(valid.replace("env:SUPPORT_PASSWORD", "hunter2-literal"));
    assert.deepEqual(result.errors, []);
    const warning = find(result.warnings, "tenants[0].mailboxes[0].auth.password");
    assert.match(warning?.fix ?? "", /env:NAME/);
    assert.ok(!JSON.stringify(result.warnings).includes("hunter2-literal"));
  });

  it("warns when port 993 is combined with starttls", () => {
    const result = validateConfig(valid.replace("port: 993", "port: 993\n          tls: starttls"));
    assert.deepEqual(result.errors, []);
    assert.match(find(result.warnings, "tenants[0].mailboxes[0].inbound.tls")?.fix ?? "", /tls: implicit/);
  });

  it("warns when agents may answer but there is no smtp server", () => {
    const withoutSmtp = valid.replace(/ {8}smtp:\n.*\n.*\n/, "");
    const result = validateConfig(withoutSmtp);
    assert.deepEqual(result.errors, []);
    assert.ok(find(result.warnings, "tenants[0].mailboxes[0].smtp"));
    assert.equal(validateConfig(`${withoutSmtp}        agentsMayAnswer: false\n`).warnings.length, 0);
  });

  it("rejects a routing regex that does not compile, naming the rule", () => {
    const result = validateConfig(`${valid}        routing:\n          rules:\n            - subject: { exact: hi }\n            - from: { regex: "(unclosed" }\n              queue: vip\n`);
    const issue = find(result.errors, "tenants[0].mailboxes[0].routing.rules[1].from.regex");
    assert.match(issue?.message ?? "", /does not compile/);
  });

  it("rejects afterImport move without a folder", () => {
    const result = validateConfig(valid.replace("port: 993", "port: 993\n          afterImport: { action: move }"));
    const issue = find(result.errors, "tenants[0].mailboxes[0].inbound.afterImport.folder");
    assert.match(issue?.fix ?? "", /folder: Processed/);
  });

  it("reports a misspelt field with the line it is on", () => {
    const { errors } = validateConfig(valid.replace("        smtp:\n", "        smpt:\n"));
    const issue = find(errors, "tenants[0].mailboxes[0]");
    assert.match(issue?.message ?? "", /unknown field "smpt"/);
    assert.match(issue?.fix ?? "", /spelling/);
  });

  it("reports YAML syntax errors with a line and without echoing the file", () => {
    const { errors } = validateConfig(valid.replace("  url: postgres", "url:\n - : : postgres"));
    assert.ok(errors.length > 0);
    assert.match(errors[0]!.message, /^YAML syntax/);
  });
});

describe("archive overrides", () => {
  it("a mailbox that overrides only the path inherits the other archive settings", async () => {
    const { archiveSettingsFor } = await import("./index.js");
    const config = parseConfig(
      valid
        .replace("  path: /var/lib/postroom/archive\n", "  path: /var/lib/postroom/archive\n  warnPercentLeft: 10\n  sendAlerts: true\n  alertRecipients: [ops@example.com]\n")
        .replace("        smtp:\n", "        archive: { path: /srv/other }\n        smtp:\n"),
    );
    const settings = archiveSettingsFor(config, config.tenants[0]!.mailboxes[0]!);
    assert.deepEqual(settings, { path: "/srv/other", warnPercentLeft: 10, minFreeBytes: 512 * 1024 * 1024, sendAlerts: true, alertRecipients: ["ops@example.com"] });
  });
});
