// `postroom test-auth` as an administrator runs it: the real command in its own process (it reads
// NODE_EXTRA_CA_CERTS at start-up), against the fake identity platform over HTTPS, a Dovecot that
// accepts XOAUTH2 through its oauth2 passdb with a per-mailbox grant list, and Postfix submission
// authenticating through that Dovecot. Every failure case checks the verdict, the catalogue's fix
// and the exit code.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import {
  dovecotAuthListener,
  dovecotOAuth2,
  freePort,
  rsaCertificate,
  startDovecot,
  startFakeGraph,
  startFakeIdentityPlatform,
  startPostfix,
  stopAll,
  tempDir,
  type DovecotOAuth2Profile,
  type DovecotServer,
  type FakeGraph,
  type FakeIdentityPlatform,
  type PostfixServer,
  type TempDir,
} from "@postroom/testkit";
import { stringify } from "yaml";

const run = promisify(execFile);
const MAIN = resolve(fileURLToPath(new URL("../main.ts", import.meta.url)));
const TENANT = "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88";
const APP = "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66";
const OBJECT_ID = "0d1e2f30-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const EXPIRED_APP = "7c9f5e43-1a6d-4b8c-8e4f-3d2a1b0c9e88";
const CERT_APP = "6b8e4d32-0f5c-4a7b-9d3e-2c1f0a9b8d77";
const SECRET = "Xq8~test-auth-secret-value.7Jk2LmN9";
const SECRET_ID = "e4b1c2d3-0a9f-4e8d-b7c6-5a4f3e2d1c0b";
const MAILBOX = "support@acme.test";
const NO_GRANT = "nogrant@acme.test";
const PASSWORD_USER = "plain@acme.test";
const SERVICE_ACCOUNT = "postroom@acme-project.iam.gserviceaccount.com";
/** Graph apps: all permissions and the mailbox grant; all permissions but no grant; no Mail.Send. */
const GRAPH_APP = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
const GRAPH_OBJECT_ID = "1b2c3d4e-5f6a-4b7c-9d8e-1f2a3b4c5d6e";
const GRAPH_STRANGER = "8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f";
const STRANGER_OBJECT_ID = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
const GRAPH_READER = "7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a";
const GRAPH_MAILBOX = "graph@acme.test";

let dir: TempDir;
let idp: FakeIdentityPlatform;
let oauth: DovecotOAuth2Profile;
let dovecot: DovecotServer;
let postfix: PostfixServer;
let graph: FakeGraph;
let configPath: string;

before(async () => {
  dir = tempDir("test-auth");
  const uploaded = await rsaCertificate(dir.path, "uploaded");
  const google = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  const keyFile = join(dir.path, "google.json");
  await writeFile(keyFile, JSON.stringify({ type: "service_account", client_email: SERVICE_ACCOUNT, private_key: google.privateKey }));
  const other = await rsaCertificate(dir.path, "not-uploaded");
  privateKeys = [uploaded.privateKeyPem, other.privateKeyPem, google.privateKey].flatMap((pem) => pem.split("\n").filter((l) => l && !l.startsWith("-----")));
  idp = await startFakeIdentityPlatform({
    apps: [
      { tenantId: TENANT, clientId: APP, objectId: OBJECT_ID, secrets: [{ value: SECRET }], roles: ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"] },
      { tenantId: TENANT, clientId: EXPIRED_APP, secrets: [{ value: "old-value", expired: true }] },
      { tenantId: TENANT, clientId: CERT_APP, certificates: [uploaded.certificatePem], roles: ["IMAP.AccessAsApp"] },
      { tenantId: TENANT, clientId: GRAPH_APP, objectId: GRAPH_OBJECT_ID, secrets: [{ value: SECRET }], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
      { tenantId: TENANT, clientId: GRAPH_STRANGER, objectId: STRANGER_OBJECT_ID, secrets: [{ value: SECRET }], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
      { tenantId: TENANT, clientId: GRAPH_READER, secrets: [{ value: SECRET }], graphRoles: ["Mail.ReadWrite"] },
    ],
    serviceAccounts: [{ clientEmail: SERVICE_ACCOUNT, publicKeyPem: google.publicKey }],
  });
  oauth = await dovecotOAuth2({ introspectionUrl: idp.info.introspectionUrl, caCertPath: idp.info.caCertPath, grants: { [MAILBOX]: [APP, SERVICE_ACCOUNT] } });
  const saslPort = await freePort();
  dovecot = await startDovecot({
    users: [
      { user: PASSWORD_USER, password: "the-right-password" },
      { user: MAILBOX, password: "fixture-only" },
      { user: GRAPH_MAILBOX, password: "fixture-only" },
    ],
    lmtp: true,
    authMechanisms: oauth.authMechanisms,
    extraConfig: `${oauth.extraConfig}\n${dovecotAuthListener(saslPort)}`,
  });
  postfix = await startPostfix({ lmtpPort: dovecot.info.lmtpPort!, saslPort });
  // The stranger holds the permissions tenant-wide but is outside the mailbox's RBAC scope.
  graph = await startFakeGraph({ identity: idp, dovecot: dovecot.info, mailboxes: [{ user: GRAPH_MAILBOX, imapPassword: "fixture-only", apps: [GRAPH_APP, GRAPH_READER] }] });
  const graphBox = (id: string, clientId: string) => ({ id, address: GRAPH_MAILBOX, inbound: { protocol: "graph" }, outbound: "graph", graph: { url: graph.url }, auth: ms(clientId, { clientSecret: "env:SECRET" }) });
  const closedPort = await freePort();
  const inbound = { protocol: "imap", host: "127.0.0.1", port: dovecot.info.imapPort, tls: "none" };
  const ms = (clientId: string, extra: Record<string, unknown>) => ({ type: "microsoft365", tenantId: TENANT, clientId, authorityHost: idp.info.authorityHost, ...extra });
  const config = {
    version: 1,
    database: { url: "postgres://127.0.0.1:1/unused" },
    archive: { path: join(dir.path, "archive") },
    tenants: [
      {
        id: "acme",
        acd: { type: "builtin" },
        mailboxes: [
          { id: "plain", address: PASSWORD_USER, inbound, auth: { type: "password", password: "env:WRONG_PASSWORD" } },
          { id: "down", address: PASSWORD_USER, inbound: { ...inbound, port: closedPort }, auth: { type: "password", password: "env:WRONG_PASSWORD" } },
          { id: "certbox", address: MAILBOX, inbound, auth: ms(CERT_APP, { certificate: { certificate: `file:${other.certPath}`, privateKey: `file:${other.keyPath}` } }) },
          { id: "gmail", address: MAILBOX, inbound, auth: { type: "google-service-account", keyFile: `file:${keyFile}`, tokenUrl: idp.info.googleTokenUrl } },
          graphBox("graph", GRAPH_APP),
          graphBox("graph-stranger", GRAPH_STRANGER),
          graphBox("graph-reader", GRAPH_READER),
          { id: "pop", address: MAILBOX, inbound: { protocol: "pop3", host: "127.0.0.1", port: dovecot.info.pop3Port, tls: "none" }, auth: ms(APP, { clientSecret: "env:SECRET" }) },
        ],
      },
    ],
  };
  configPath = join(dir.path, "postroom.yaml");
  await writeFile(configPath, stringify(config));
});

after(async () => {
  await stopAll([graph, idp, dovecot, postfix]);
  await oauth?.dir.remove();
  await dir?.remove();
});

/** Every output of every run, searched for secrets at the end. */
const outputs: string[] = [];
let privateKeys: string[] = [];

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function testAuth(args: string[], env: Record<string, string> = {}, trustIdp = true): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--conditions=source", "--import", "tsx", MAIN, "test-auth", ...args], {
      env: { ...process.env, ...(trustIdp ? { NODE_EXTRA_CA_CERTS: idp.info.caCertPath } : { NODE_EXTRA_CA_CERTS: "" }), ...env },
      timeout: 90_000,
    });
    outputs.push(stdout, stderr);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    outputs.push(e.stdout ?? "", e.stderr ?? "");
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** The no-config form against the local servers: IMAP and POP3 plain on loopback, SMTP with STARTTLS. */
function direct(clientId: string, extra: string[] = [], mailbox = MAILBOX): string[] {
  return [
    "--tenant-id", TENANT,
    "--client-id", clientId,
    "--client-secret-env", "M365_SECRET",
    "--mailbox-address", mailbox,
    "--authority-host", idp.info.authorityHost,
    "--imap-host", `127.0.0.1:${dovecot.info.imapPort}`, "--imap-tls", "none",
    "--pop3-host", `127.0.0.1:${dovecot.info.pop3Port}`, "--pop3-tls", "none",
    "--smtp-host", `127.0.0.1:${postfix.info.submissionPort}`, "--smtp-tls", "starttls",
    "--insecure",
    ...extra,
  ];
}

function line(out: string, step: string): string {
  // Every verdict line of that step (config and the environment checks have several).
  return out.split("\n").filter((l) => l.startsWith("[") && l.slice(7).trimStart().startsWith(`${step} `)).join("\n");
}

test("a correct Microsoft 365 setup passes every step, with claims decoded and exit code 0", async () => {
  const r = await testAuth(direct(APP, ["--send-to", PASSWORD_USER]), { M365_SECRET: SECRET });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const step of ["dns", "tcp", "tls", "clock", "config", "token", "claims", "imap", "pop3", "smtp", "send"]) assert.match(line(r.stdout, step), /^\[(PASS|WARN)\]/, `${step}:\n${r.stdout}`);
  assert.match(r.stdout, new RegExp(`appid: ${APP}`));
  assert.match(r.stdout, /roles: IMAP\.AccessAsApp, POP\.AccessAsApp, SMTP\.SendAsApp/);
  assert.match(r.stdout, /aud: {3}https:\/\/outlook\.office365\.com/);
  assert.match(r.stdout, /result: PASS/);
  assert.ok(!r.stdout.includes(SECRET), "the secret is never printed");
});

test("the Secret ID instead of the value: config warns, the token step fails with AADSTS7000215 and the fix, exit code 1", async () => {
  const r = await testAuth(direct(APP), { M365_SECRET: SECRET_ID });
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "config"), /WARN.*Secret ID/);
  assert.match(line(r.stdout, "token"), /^\[FAIL\]/);
  assert.match(r.stdout, /code: {4}AADSTS7000215/);
  assert.match(r.stdout, /use the secret's Value, not its Secret ID/);
  assert.match(line(r.stdout, "imap"), /^\[SKIP\]/);
});

test("an expired secret fails the token step with AADSTS7000222, exit code 1", async () => {
  const r = await testAuth(direct(EXPIRED_APP), { M365_SECRET: "old-value" });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /code: {4}AADSTS7000222/);
  assert.match(r.stdout, /create a new secret/);
});

test("an unknown client id fails with AADSTS700016, exit code 1", async () => {
  const r = await testAuth(direct("0f0f0f0f-1111-4222-8333-444455556666"), { M365_SECRET: SECRET });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /code: {4}AADSTS700016/);
  assert.match(r.stdout, /client id is wrong, or the request went to the wrong tenant/);
});

test("an unknown tenant fails with AADSTS90002, exit code 1", async () => {
  const args = direct(APP);
  args[1] = "9e9e9e9e-aaaa-4bbb-8ccc-dddddddddddd";
  const r = await testAuth(args, { M365_SECRET: SECRET });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /code: {4}AADSTS90002/);
  assert.match(r.stdout, /tenant id for typos/);
});

test("a wrong scope fails with the catalogue's scope fix, exit code 1", async () => {
  const r = await testAuth(direct(APP, ["--scope", "https://outlook.office365.com/IMAP.AccessAsApp"]), { M365_SECRET: SECRET });
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "config"), /WARN.*no \/\.default suffix/);
  assert.match(r.stdout, /code: {4}AADSTS1002012/);
  assert.match(r.stdout, /use https:\/\/outlook\.office365\.com\/\.default/);
});

test("an app without a grant on the mailbox: token fine, IMAP AUTHENTICATE refused, PowerShell filled with appid and oid, exit code 1", async () => {
  const r = await testAuth(direct(APP, ["--no-smtp"], NO_GRANT), { M365_SECRET: SECRET });
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "token"), /^\[PASS\]/);
  assert.match(line(r.stdout, "imap"), /^\[FAIL\].*refused the login of nogrant@acme\.test/);
  assert.match(r.stdout, /IMAP NO AUTHENTICATE failed\./);
  assert.match(r.stdout, new RegExp(`New-ServicePrincipal -AppId ${APP} -ObjectId ${OBJECT_ID}`));
  assert.match(r.stdout, new RegExp(`Add-MailboxPermission -Identity ${NO_GRANT} -User ${OBJECT_ID} -AccessRights FullAccess`));
  assert.match(line(r.stdout, "pop3"), /^\[FAIL\]/);
});

test("a password mailbox with the wrong password: IMAP refused with the password fix, exit code 1", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "plain"], { WRONG_PASSWORD: "not-the-password" });
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "imap"), /^\[FAIL\].*refused the login of plain@acme\.test/);
  assert.match(r.stdout, /check the password \(or app password\)/);
  assert.ok(!r.stdout.includes("not-the-password"));
});

test("an unreachable host fails at the TCP check and the login is skipped, exit code 1", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "acme/down"], { WRONG_PASSWORD: "x" });
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "tcp"), /^\[FAIL\].*unreachable \(ECONNREFUSED\)/);
  assert.match(r.stdout, /nothing listens on that port/);
  assert.match(line(r.stdout, "imap"), /^\[SKIP\]/);
});

test("a certificate the identity platform does not trust fails with AADSTS700027, exit code 1", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "certbox"]);
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "config"), /\[WARN\] config {2}the certificate expires on/, "a 30-day certificate is inside the warning window");
  assert.match(r.stdout, /code: {4}AADSTS700027/);
  assert.match(r.stdout, /upload this certificate/);
});

test("an identity platform whose TLS certificate this machine does not trust fails the TLS check, exit code 1", async () => {
  const r = await testAuth(direct(APP), { M365_SECRET: SECRET }, false);
  assert.equal(r.code, 1);
  assert.match(line(r.stdout, "tls"), /^\[FAIL\] tls {5}identity platform/);
  assert.match(r.stdout, /NODE_EXTRA_CA_CERTS/);
  assert.match(line(r.stdout, "token"), /^\[SKIP\]/);
});

test("the config form tests POP3 when the mailbox reads POP3, and --json gives the same verdicts for scripts", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "pop", "--json"], { SECRET });
  assert.equal(r.code, 0, r.stdout);
  const report = JSON.parse(r.stdout) as { ok: boolean; steps: Array<{ step: string; verdict: string }> };
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.steps.filter((s) => ["token", "claims", "pop3"].includes(s.step)).map((s) => [s.step, s.verdict]),
    [["token", "pass"], ["claims", "pass"], ["pop3", "pass"]],
  );
  assert.ok(!report.steps.some((s) => s.step === "imap"));
});

test("a Google Workspace service account gets a token for the mailbox and logs in over IMAP, exit code 0", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "gmail"]);
  assert.equal(r.code, 0, r.stdout);
  assert.match(line(r.stdout, "token"), /^\[PASS\].*scope https:\/\/mail\.google\.com\//);
  assert.match(r.stdout, new RegExp(`appid: ${SERVICE_ACCOUNT}`));
  assert.match(line(r.stdout, "imap"), /^\[PASS\] imap {4}logged in/);
});

test("--env-only checks DNS, TCP, TLS and the clock for the identity platform and each mail host, and names an unreachable one", async () => {
  const ok = await testAuth(["--env-only", "--authority-host", idp.info.authorityHost, "--imap-host", `127.0.0.1:${dovecot.info.imapPort}`, "--imap-tls", "none", "--smtp-host", `127.0.0.1:${postfix.info.smtpsPort}`, "--smtp-tls", "implicit", "--insecure"]);
  assert.equal(ok.code, 0, ok.stdout);
  assert.match(line(ok.stdout, "tls"), /identity platform .* trusted certificate/);
  assert.match(line(ok.stdout, "tls"), /SMTP 127\.0\.0\.1/);
  assert.match(line(ok.stdout, "clock"), /^\[PASS\]/);
  const closed = await freePort();
  const down = await testAuth(["--env-only", "--authority-host", idp.info.authorityHost, "--imap-host", `127.0.0.1:${closed}`, "--no-smtp"]);
  assert.equal(down.code, 1);
  assert.match(line(down.stdout, "tcp"), new RegExp(`\\[FAIL\\] tcp {5}IMAP 127\\.0\\.0\\.1:${closed} is unreachable`));
});

test("usage errors exit with code 2", async () => {
  assert.equal((await testAuth(["--tenant-id", TENANT])).code, 2);
  assert.equal((await testAuth(["--config", configPath, "--mailbox", "nope"])).code, 2);
});

test("a Graph mailbox with every grant passes: a Graph token with Mail.ReadWrite and Mail.Send, the inbox opened through Graph, one test message sent", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "graph", "--send-to", PASSWORD_USER], { SECRET });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(line(r.stdout, "token"), /^\[PASS\].*scope https:\/\/graph\.microsoft\.com\/\.default/);
  assert.match(line(r.stdout, "claims"), /^\[PASS\].*Microsoft Graph/);
  assert.match(r.stdout, /aud: {3}https:\/\/graph\.microsoft\.com/);
  assert.match(r.stdout, /roles: Mail\.ReadWrite, Mail\.Send/);
  assert.match(line(r.stdout, "graph"), /^\[PASS\] graph {3}opened Inbox of graph@acme\.test through Microsoft Graph/);
  assert.match(line(r.stdout, "send"), /^\[PASS\].*accepted by Microsoft Graph/);
  for (const step of ["imap", "pop3", "smtp"]) assert.equal(line(r.stdout, step), "", `no ${step} step for a Graph mailbox`);
  assert.equal(graph.sent.filter((m) => m.user === GRAPH_MAILBOX).length, 1);
  assert.ok(!r.stdout.includes(SECRET), "the secret is never printed");
});

test("an app outside the mailbox's RBAC scope fails with ErrorAccessDenied explained and the role assignment filled in with its ids", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "graph-stranger"], { SECRET });
  assert.equal(r.code, 1, r.stdout);
  assert.match(line(r.stdout, "claims"), /^\[PASS\]/, "the permissions are consented: the mailbox grant is what is missing");
  assert.match(line(r.stdout, "graph"), /^\[FAIL\]/);
  assert.match(r.stdout, /code: {4}403 ErrorAccessDenied/);
  assert.match(r.stdout, /outside the app's RBAC for Applications scope/);
  assert.match(r.stdout, new RegExp(`New-ServicePrincipal -AppId ${GRAPH_STRANGER} -ObjectId ${STRANGER_OBJECT_ID}`), "the object id is the token's oid");
  assert.match(r.stdout, new RegExp(`New-ManagementRoleAssignment -App ${GRAPH_STRANGER} -Role "Application Mail\\.ReadWrite" -CustomResourceScope`));
  assert.match(r.stdout, new RegExp(`New-ManagementRoleAssignment -App ${GRAPH_STRANGER} -Role "Application Mail\\.Send"`));
  assert.match(r.stdout, new RegExp(`Test-ApplicationAccessPolicy -Identity ${GRAPH_MAILBOX} -AppId ${GRAPH_STRANGER}`));
});

test("a Graph token without Mail.Send fails the claims step with the permission to add and consent", async () => {
  const r = await testAuth(["--config", configPath, "--mailbox", "graph-reader", "--json"], { SECRET });
  assert.equal(r.code, 1, r.stdout);
  const report = JSON.parse(r.stdout) as { ok: boolean; steps: Array<{ step: string; verdict: string; summary: string; explanation?: { fix: string } }> };
  const claims = report.steps.find((s) => s.step === "claims");
  assert.equal(claims?.verdict, "fail");
  assert.match(claims!.summary, /token roles lack Mail\.Send/);
  assert.match(claims!.explanation!.fix, /API permissions → Add a permission → Microsoft Graph → Application permissions → Mail\.Send, then "Grant admin consent"/);
  // Reading still works with Mail.ReadWrite, and says so.
  assert.equal(report.steps.find((s) => s.step === "graph")?.verdict, "pass");
});

test("no secret, password or private key appears in any output of these runs", () => {
  assert.ok(outputs.join("").length > 10_000, "outputs were captured");
  for (const secret of [SECRET, SECRET_ID, "old-value", "the-right-password", "not-the-password", ...privateKeys]) {
    assert.ok(!outputs.some((o) => o.includes(secret)), "a secret was printed");
  }
});
