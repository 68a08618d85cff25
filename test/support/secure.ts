import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import type { PostroomConfigInput } from "@postroom/config";
import { DATABASE_SERVICES, groupRole } from "@postroom/db";
import { connectNats, type NatsConnection } from "@postroom/nats-kit";
import {
  cleanupNamespace,
  createTestDatabase,
  natsUrl,
  selfSignedCertificate,
  tempDir,
  type SelfSignedCertificate,
  type TestDatabase,
} from "@postroom/testkit";
import pg from "pg";
import { databaseRoles, dbRolesByDefault, type DatabaseRoles } from "./db-roles.js";
import { OBSERVER, secureByDefault, startSecureBus, type SecureBus } from "./secure-bus.js";

/**
 * Secure mode (POSTROOM_E2E_SECURE=1, the e2e runner's default): every world runs on a private
 * nats-server of its own with TLS and the contracts-generated user per service (the test connects
 * as the observer), and on PostgreSQL over TLS only (pg_hba `hostssl`) with each service logging
 * in as its own role. Off (a file run alone with `node --test`, or POSTROOM_E2E_SECURE=0), worlds
 * use the shared plain servers on 4222 and 5432.
 */
export function secureMode(): boolean {
  return process.env.POSTROOM_E2E_SECURE === "1";
}

let certificate: Promise<SelfSignedCertificate> | undefined;

/** The test process's server certificate (self-signed, for 127.0.0.1 and localhost): NATS and PostgreSQL serve it. */
export function processCertificate(): Promise<SelfSignedCertificate> {
  certificate ??= selfSignedCertificate(tempDir("secure-cert").path, "localhost");
  return certificate;
}

let cluster: Promise<{ adminUrl: string }> | undefined;

/**
 * The test process's private PostgreSQL cluster, serving TLS only (one per process: a cluster
 * costs seconds to make, a database on it milliseconds). The postmaster is stopped when the
 * process exits. The test's own connections (set-up, assertions) trust the same CA through
 * pg's default `ssl`; the services verify the server with `database.tls.ca` of their config.
 */
export function securePostgres(): Promise<{ adminUrl: string }> {
  cluster ??= (async () => {
    const cert = await processCertificate();
    // Imported here: the plain mode never needs initdb.
    const { PrivatePostgres } = await import("./private-postgres.js");
    const p = await PrivatePostgres.create({ tls: { certPath: cert.certPath, keyPath: cert.keyPath } });
    pg.defaults.ssl = { ca: cert.certPem };
    return { adminUrl: p.url.replace(/\/postroom$/, "/postgres") };
  })();
  return cluster;
}

/** A world's database: on the process's TLS-only cluster in secure mode, else on the shared server. */
export async function worldDatabase(prefix: string): Promise<TestDatabase> {
  if (!secureMode()) return createTestDatabase(prefix);
  return createTestDatabase(prefix, { adminUrl: (await securePostgres()).adminUrl });
}

export interface SecureOptions {
  /** A private nats-server with a least-privilege user per service (default: secure mode or POSTROOM_E2E_SECURE_NATS=1). */
  secure?: boolean;
  bus?: Parameters<typeof startSecureBus>[1];
  /** Each service logs in to PostgreSQL as its own role (default: secure mode or POSTROOM_E2E_DB_ROLES=1). */
  dbRoles?: boolean;
}

/** What a world's security set-up made: the bus and roles (if any), the services' environment, the test's connection. */
export interface WorldSecurity {
  bus: SecureBus | undefined;
  dbRoles: DatabaseRoles | undefined;
  /** The passwords the config references (NATS and PostgreSQL users). */
  env: Record<string, string>;
  /** The test's own NATS connection: the observer on the world's bus, or anonymous on the shared server. */
  nc: NatsConnection;
  /** Removes the world's NATS state: the private server, or the namespace on the shared one. */
  closeNats(namespace: string): Promise<void>;
  /** Drops the roles (after the database). */
  dropRoles(): Promise<void>;
}

/**
 * Applies the world's security to its finished configuration (call after every tweak: the
 * generated NATS permissions list the configured tenants and mailboxes). The CA files are copied
 * into `dir`, the world's folder, so a service that sees only that folder (ops-image's chroot)
 * still finds them. `dir` must exist.
 */
export async function secureWorld(config: PostroomConfigInput, dir: string, name: string, options: SecureOptions = {}): Promise<WorldSecurity> {
  let bus: SecureBus | undefined;
  let dbRoles: DatabaseRoles | undefined;
  let caPath: string | undefined;
  if (secureMode()) {
    const cert = await processCertificate();
    caPath = join(dir, "e2e-ca.crt");
    await copyFile(cert.certPath, caPath);
    config.database = { ...config.database!, tls: { ca: caPath } };
  }
  if (options.secure ?? secureByDefault()) {
    const cert = caPath ? await processCertificate() : undefined;
    const tls = options.bus?.tls ?? (cert ? { certPath: cert.certPath, keyPath: cert.keyPath, clientCaPath: caPath! } : undefined);
    bus = await startSecureBus(config, { ...options.bus, ...(tls ? { tls } : {}) });
    bus.apply(config);
  }
  if (options.dbRoles ?? dbRolesByDefault()) {
    dbRoles = databaseRoles();
    dbRoles.apply(config);
    await dbRoles.setUp(config.database!.url, config.database?.tls);
  }
  const tlsCa = config.nats?.tls?.ca;
  const nc = bus
    ? await connectNats({ url: bus.nats.url, name: `e2e-${name}`, user: OBSERVER, password: bus.passwords[OBSERVER], ...(tlsCa ? { tls: { caFile: tlsCa } } : {}) })
    : await connectNats({ url: natsUrl(), name: `e2e-${name}` });
  return {
    bus,
    dbRoles,
    env: { ...bus?.env, ...dbRoles?.env },
    nc,
    async closeNats(namespace) {
      if (bus) await bus.nats.stop();
      else await cleanupNamespace(natsUrl(), namespace).catch(() => undefined);
    },
    async dropRoles() {
      if (!dbRoles) return;
      // The world's database is gone by now, and its grants with it — unless the config points
      // the services at another database (archive-pg-outage's private cluster): there the grants
      // still hold the roles, so they are revoked first.
      const ownerUrl = config.database!.url;
      const owner = new pg.Client({ connectionString: ownerUrl, connectionTimeoutMillis: 30_000 });
      const connected = await owner.connect().then(
        () => true,
        () => false,
      );
      if (connected) {
        try {
          const roles = [...Object.values(dbRoles.logins).map((l) => l.user), ...DATABASE_SERVICES.map((s) => groupRole(s, dbRoles!.prefix))];
          await owner.query(`DROP OWNED BY ${roles.map((r) => `"${r}"`).join(", ")}`);
        } finally {
          await owner.end();
        }
      }
      await dbRoles.drop();
    },
  };
}
