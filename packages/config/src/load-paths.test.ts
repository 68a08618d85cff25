import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadConfigFile } from "./load.js";

test("relative archive and log folders are taken from the config file's folder and come back absolute", async () => {
  const dir = await mkdtemp(join(tmpdir(), "postroom-paths-"));
  try {
    const file = join(dir, "postroom.yaml");
    await writeFile(
      file,
      `version: 1
database: { url: "postgres://postgres@127.0.0.1:5432/x" }
archive: { path: ./data/archive }
logs: { path: logs }
tenants:
  - id: acme
    mailboxes:
      - id: support
        address: support@acme.example
        inbound: { protocol: imap, host: imap.acme.example }
        auth: { type: password, password: "env:P" }
        archive: { path: ../elsewhere }
      - id: sales
        address: sales@acme.example
        inbound: { protocol: imap, host: imap.acme.example }
        auth: { type: password, password: "env:P" }
        archive: { path: /srv/archive }
`,
    );
    const config = await loadConfigFile(join(dir, ".", "postroom.yaml"));
    assert.equal(config.archive.path, join(dir, "data", "archive"));
    assert.equal(config.logs.path, join(dir, "logs"));
    assert.equal(config.tenants[0]!.mailboxes[0]!.archive?.path, join(dir, "..", "elsewhere"));
    assert.equal(config.tenants[0]!.mailboxes[1]!.archive?.path, "/srv/archive");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
