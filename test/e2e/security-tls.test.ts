// TLS to NATS and PostgreSQL as the services make it (connectService, createPool from the
// config's nats.tls / database.tls): a private nats-server 2.9 and a private PostgreSQL 15 with
// TLS on loopback, certificates made by the test kit. Verification is on by default: a server
// whose CA is not given is refused.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PostroomConfig } from "@postroom/config";
import { createPool } from "@postroom/db";
import { connectNats } from "@postroom/nats-kit";
import { natsOptionsFor } from "@postroom/runtime";
import { selfSignedCertificate, startPrivateNats, tempDir, type PrivateNats, type SelfSignedCertificate, type TempDir } from "@postroom/testkit";
import { PrivatePostgres } from "../support/private-postgres.js";

let dir: TempDir;
let server: SelfSignedCertificate;
let client: SelfSignedCertificate;
let other: SelfSignedCertificate;
let nats: PrivateNats;
let natsMutual: PrivateNats;
let postgres: PrivatePostgres;

before(async () => {
  dir = tempDir("tls");
  server = await selfSignedCertificate(dir.path, "localhost");
  client = await selfSignedCertificate(dir.path, "postroom-client");
  other = await selfSignedCertificate(dir.path, "someone-else");
  nats = await startPrivateNats({ tls: { certPath: server.certPath, keyPath: server.keyPath } });
  // This one also wants a client certificate signed by the client CA.
  natsMutual = await startPrivateNats({ tls: { certPath: server.certPath, keyPath: server.keyPath, caPath: client.certPath, verify: true } });
  postgres = await PrivatePostgres.create({ tls: { certPath: server.certPath, keyPath: server.keyPath } });
});

after(async () => {
  await nats?.stop();
  await natsMutual?.stop();
  await postgres?.remove();
  await dir?.remove();
});

/** Connects as the service would, except that a refused first attempt rejects instead of retrying forever. */
async function connectService(c: PostroomConfig, service: "archiver" | "smtp-sender", env: NodeJS.ProcessEnv) {
  return connectNats({ ...(await natsOptionsFor(c, service, env)), waitOnFirstConnect: false });
}

function config(natsUrl: string, tls: Record<string, unknown> | undefined, dbTls?: Record<string, unknown>): PostroomConfig {
  return PostroomConfig.parse({
    version: 1,
    nats: { url: natsUrl, ...(tls ? { tls } : {}) },
    database: { url: postgres.url, ...(dbTls ? { tls: dbTls } : {}) },
    archive: { path: dir.path },
    tenants: [{ id: "acme", acd: { type: "builtin" }, mailboxes: [{ id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", port: 1, tls: "none" }, auth: { type: "password", password: "env:X" } }] }],
  });
}

test("a service reaches NATS over TLS when it trusts the server's CA, and refuses a server it cannot verify", async () => {
  const nc = await connectService(config(nats.url, { ca: server.certPath }), "archiver", {});
  try {
    assert.equal(nc.info?.tls_required, true, "the server demands TLS");
    const echo = nc.subscribe("tls.echo", {
      max: 1,
      callback: (_e, m) => {
        m.respond(m.data);
      },
    });
    void echo;
    assert.equal((await nc.request("tls.echo", "over tls", { timeout: 5_000 })).string(), "over tls");
  } finally {
    await nc.close();
  }
  // Verification on by default: the wrong CA, or none, is a refused connection, not a silent one.
  await assert.rejects(connectService(config(nats.url, { ca: other.certPath }), "archiver", {}));
  await assert.rejects(connectService(config(nats.url, {}), "archiver", {}));
  // Only when switched off (throwaway test servers) does an unverified server pass.
  const unverified = await connectService(config(nats.url, { verify: false }), "archiver", {});
  await unverified.close();
});

test("a NATS server that asks for client certificates accepts the configured one and no other", async () => {
  const nc = await connectService(config(natsMutual.url, { ca: server.certPath, cert: client.certPath, key: client.keyPath }), "smtp-sender", {});
  await nc.flush();
  await nc.close();
  await assert.rejects(
    (async () => {
      const c = await connectService(config(natsMutual.url, { ca: server.certPath, cert: other.certPath, key: other.keyPath }), "smtp-sender", {});
      await c.flush();
      await c.close();
    })(),
  );
});

test("PostgreSQL is reached over TLS with the server verified; without TLS the server refuses, and an unknown CA is refused", async () => {
  const pool = createPool(postgres.url, { tls: config(nats.url, undefined, { ca: server.certPath }).database.tls, max: 1 });
  try {
    const { rows } = await pool.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert.deepEqual(rows, [{ ssl: true }], "this very connection is encrypted");
  } finally {
    await pool.end();
  }
  const plain = createPool(postgres.url, { max: 1 });
  await assert.rejects(plain.query("SELECT 1"), /no pg_hba.conf entry|SSL off|encryption/i);
  await plain.end();
  const wrong = createPool(postgres.url, { tls: { ca: other.certPath }, max: 1 });
  await assert.rejects(wrong.query("SELECT 1"), /self[- ]signed|certificate|verify/i);
  await wrong.end();
});
