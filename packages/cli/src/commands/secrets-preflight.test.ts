import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfig, formatEnvFile } from "@postroom/config";
import { tempDir } from "@postroom/testkit";
import { missingSecrets, readEnvFile, secretUses } from "./secrets-preflight.js";

const dir = tempDir("secrets-preflight");
after(() => dir.remove());

const config = parseConfig(`version: 1
database: { url: "postgres://postgres@127.0.0.1:5432/x" }
archive: { path: /tmp/archive }
tenants:
  - id: acme
    acd: { type: webhook, url: "https://acd.example/hook", signingSecret: "env:HOOK_SECRET" }
    agents:
      - { id: ann, password: "env:ANN_PASSWORD", queues: [email] }
    mailboxes:
      - id: support
        address: support@acme.example
        inbound: { protocol: imap, host: imap.acme.example }
        auth: { type: password, password: "env:SUPPORT_PASSWORD" }
        smtp: { host: smtp.acme.example, auth: { type: password, password: "file:${join(dir.path, "smtp-secret")}" } }
      - id: sales
        address: sales@acme.example
        inbound: { protocol: imap, host: imap.acme.example }
        auth: { type: password, password: "an inline literal" }
`);

test("every secret reference is listed with its config path, owner and the service that resolves it; literals are not", () => {
  assert.deepEqual(
    secretUses(config).map((u) => [u.path, u.ref.split(":")[0], u.service, u.owner]),
    [
      ["tenants[0].mailboxes[0].auth.password", "env", "token-service", "mailbox acme/support"],
      ["tenants[0].mailboxes[0].smtp.auth.password", "file", "token-service", "mailbox acme/support"],
      ["tenants[0].agents[0].password", "env", "asd-bridge", "agent acme/ann"],
      ["tenants[0].acd.signingSecret", "env", "asd-bridge", "tenant acme's webhook ACD"],
    ],
  );
});

test("the services' database users' passwords and URLs are secrets of those services", () => {
  const withUsers = parseConfig(`version: 1
database:
  url: "postgres://owner@127.0.0.1:5432/x"
  users:
    archiver: { user: a_login, password: "env:PG_ARCHIVER" }
    asd-bridge: { url: "file:/run/secrets/bridge-url" }
    smtp-sender: { user: s_login, password: "env:PG_SENDER" }
archive: { path: /tmp/archive }
tenants:
  - id: acme
    mailboxes:
      - id: support
        address: support@acme.example
        inbound: { protocol: imap, host: imap.acme.example }
        auth: { type: password, password: "env:SUPPORT_PASSWORD" }
`);
  assert.deepEqual(
    secretUses(withUsers).filter((u) => u.path.startsWith("database")).map((u) => [u.path, u.ref, u.service]),
    [
      ["database.users.archiver.password", "env:PG_ARCHIVER", "archiver"],
      ["database.users.asd-bridge.url", "file:/run/secrets/bridge-url", "asd-bridge"],
      ["database.users.smtp-sender.password", "env:PG_SENDER", "smtp-sender"],
    ],
  );
});

test("only the references that do not resolve are missing, each naming the variable or file and the fix", async () => {
  await writeFile(join(dir.path, "smtp-secret"), "s3cret\n");
  const missing = await missingSecrets(secretUses(config), { SUPPORT_PASSWORD: "x", HOOK_SECRET: "" }, "postroom.yaml", "postroom.env");
  assert.deepEqual(missing.map((m) => m.path), ["tenants[0].agents[0].password", "tenants[0].acd.signingSecret"]);
  assert.match(missing[0]!.problem, /^environment variable ANN_PASSWORD is not set .*tenants\[0\]\.agents\[0\]\.password \(agent acme\/ann\) in postroom\.yaml refers to it$/);
  assert.equal(missing[0]!.fix, "export ANN_PASSWORD=… before starting, or add the line ANN_PASSWORD=… to postroom.env");
  const absent = { ...secretUses(config)[1]!, ref: `file:${join(dir.path, "no-such-secret")}` };
  const noFile = await missingSecrets([absent], {}, "postroom.yaml", "postroom.env");
  assert.match(noFile[0]!.problem, /cannot read secret file .*no-such-secret: ENOENT/);
  assert.match(noFile[0]!.fix, /^create .*no-such-secret holding the secret/);
  assert.ok(!JSON.stringify(missing).includes("s3cret"), "values are never part of the report");
});

test("readEnvFile reads back what formatEnvFile writes, quotes and all", async () => {
  const values = { PLAIN: "abc123", SPACES: "two words", QUOTE: "it's \"quoted\" \\ here", EMPTY: "" };
  const path = join(dir.path, "postroom.env");
  await writeFile(path, formatEnvFile(values, "written by a test"));
  assert.deepEqual(readEnvFile(path), values);
  assert.deepEqual(readEnvFile(join(dir.path, "absent.env")), {});
});
