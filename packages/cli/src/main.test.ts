import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const SAMPLE = join(REPO, "packages/config/src/softdial/fixtures/softdial-config.xml");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI, as `pnpm postroom` does. */
async function postroom(...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["--conditions=source", "--import", "tsx", MAIN, ...args], { cwd: REPO });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "postroom-cli-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("postroom config import-softdial", () => {
  it("converts the sample into a config that config check accepts, with the secrets only in postroom.env (0600)", async () => {
    const yamlPath = join(dir, "sample", "postroom.yaml");
    const imported = await postroom("config", "import-softdial", SAMPLE, "-o", yamlPath);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /Assumptions/);
    assert.match(imported.stdout, /C:\\Softdial\\WebServer\\www\\EmailInbox/);
    assert.match(imported.stdout, /Warnings/);

    const yaml = await readFile(yamlPath, "utf8");
    const envPath = join(dir, "sample", "postroom.env");
    const env = await readFile(envPath, "utf8");
    assert.equal((await stat(envPath)).mode & 0o777, 0o600);
    for (const secret of ["abcd efgh ijkl mnop", "Xy8Q~example-secret-value-not-the-secret-id", "history-password"]) {
      assert.ok(!yaml.includes(secret), `${secret} is in the YAML`);
      assert.ok(!imported.stdout.includes(secret) && !imported.stderr.includes(secret), `${secret} was printed`);
      assert.ok(env.includes(secret), `${secret} is not in postroom.env`);
    }

    const checked = await postroom("config", "check", yamlPath);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /env:POSTROOM_DEFAULT_SUPPORT_PASSWORD/);
    assert.match(checked.stdout, /env:POSTROOM_CONTOSO_BILLING_CLIENT_SECRET/);
  });

  it("refuses to overwrite existing files without --force", async () => {
    const yamlPath = join(dir, "again", "postroom.yaml");
    assert.equal((await postroom("config", "import-softdial", SAMPLE, "-o", yamlPath)).code, 0);
    const second = await postroom("config", "import-softdial", SAMPLE, "-o", yamlPath);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /--force/);
    assert.equal((await postroom("config", "import-softdial", SAMPLE, "-o", yamlPath, "--force")).code, 0);
  });

  it("reports malformed XML with its line and column and exits 1", async () => {
    const xml = join(dir, "broken.xml");
    await writeFile(xml, '<?xml version="1.0"?>\n<Workflow>\n  <Campaign tenantID="a" name="b">\n    <className>InboundEmailImap</className>\n  </Campaign>\n</Workflw>\n');
    const run = await postroom("config", "import-softdial", xml, "-o", join(dir, "broken", "postroom.yaml"));
    assert.equal(run.code, 1);
    assert.match(run.stderr, /line 6, column \d+/);
    assert.match(run.stderr, /likely cause/);
  });
});

describe("postroom config check", () => {
  const good = `version: 1
database: { url: "postgres://postroom:db-inline-secret@127.0.0.1:5432/postroom" }
archive: { path: ./data/archive }
tenants:
  - id: demo
    mailboxes:
      - id: support
        address: support@example.com
        inbound: { protocol: imap, host: imap.example.com, port: 993, tls: starttls }
        auth: { type: password, password: "inline-mailbox-secret" }
        smtp: { host: smtp.example.com, port: 587 }
`;

  it("prints the config with secrets redacted, then the warnings, and exits 0", async () => {
    const file = join(dir, "warn.yaml");
    await writeFile(file, good);
    const run = await postroom("config", "check", file);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /password: "\*\*\*"|password: \*\*\*/);
    assert.match(run.stdout, /postgres:\/\/postroom:\*\*\*@127\.0\.0\.1/);
    assert.ok(!(run.stdout + run.stderr).includes("inline-mailbox-secret"));
    assert.ok(!(run.stdout + run.stderr).includes("db-inline-secret"));
    assert.match(run.stderr, /warning: tenants\[0\]\.mailboxes\[0\]\.auth\.password/);
    assert.match(run.stderr, /warning: tenants\[0\]\.mailboxes\[0\]\.inbound\.tls/);
  });

  it("reports three different mistakes, each with path and fix, and exits 1", async () => {
    const file = join(dir, "bad.yaml");
    await writeFile(
      file,
      good
        .replace("port: 993", "port: 99300")
        .replace("address: support@example.com", "address: not-an-address")
        .replace("auth: { type: password, password", "auth: { type: pasword, password"),
    );
    const run = await postroom("config", "check", file);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, /3 errors/);
    for (const path of ["tenants[0].mailboxes[0].inbound.port", "tenants[0].mailboxes[0].address", "tenants[0].mailboxes[0].auth.type"]) {
      const block = run.stderr.split("  error: ").find((b) => b.startsWith(path));
      assert.ok(block, `${path} is reported`);
      assert.match(block, /problem: /);
      assert.match(block, /fix: /);
    }
    assert.ok(!run.stderr.includes("inline-mailbox-secret"));
  });

  it("accepts examples/postroom.example.yaml", async () => {
    const run = await postroom("config", "check", join(REPO, "examples", "postroom.example.yaml"));
    assert.equal(run.code, 0, run.stderr);
  });
});

describe("postroom", () => {
  it("lists the commands on --help and exits 0", async () => {
    const run = await postroom("--help");
    assert.equal(run.code, 0);
    for (const name of ["up", "config check", "config import-softdial"]) assert.match(run.stdout, new RegExp(name));
  });

  it("shows a command's help", async () => {
    const run = await postroom("config", "check", "--help");
    assert.equal(run.code, 0);
    assert.match(run.stdout, /Usage: postroom config check FILE/);
    assert.match((await postroom("help", "config", "import-softdial")).stdout, /-o, --output/);
  });

  it("rejects an unknown command with exit code 2", async () => {
    const run = await postroom("frobnicate");
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown command "frobnicate"/);
  });
});
