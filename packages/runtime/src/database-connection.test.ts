import assert from "node:assert/strict";
import { test } from "node:test";
import { parseConfig, type PostroomConfigInput } from "@postroom/config";
import { databaseConnectionFor, databaseLogins, rolesConfigured } from "./database-connection.js";

function config(database: PostroomConfigInput["database"]) {
  const input: PostroomConfigInput = {
    version: 1,
    database,
    archive: { path: "/tmp/a" },
    tenants: [
      {
        id: "acme",
        mailboxes: [
          {
            id: "support",
            address: "support@acme.test",
            inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" },
            auth: { type: "password", password: "env:P" },
            smtp: { host: "127.0.0.1", port: 25, tls: "none" },
          },
        ],
      },
    ],
  };
  return parseConfig(JSON.stringify(input), "test.yaml");
}

const shared = { url: "postgres://owner:ownerpw@db.example:5432/postroom?sslmode=require" };
const users = {
  ...shared,
  users: {
    archiver: { user: "postroom_archiver_login", password: "env:PG_ARCHIVER" },
    "asd-bridge": { url: "env:BRIDGE_URL" },
    "smtp-sender": { user: "postroom_smtp_sender_login", password: "env:PG_SENDER" },
  },
};
const env = { PG_ARCHIVER: "a p@ss/word", PG_SENDER: "s3nd", BRIDGE_URL: "postgres://bridge_login:b%40pw@db.example:5432/postroom" };

test("without database users every service shares database.url and migrates, as before", async () => {
  const c = config(shared);
  assert.deepEqual(await databaseConnectionFor(c, "archiver", {}), { url: shared.url, ownRole: false });
  assert.equal(rolesConfigured(c, {}), false);
  assert.deepEqual(await databaseLogins(c, {}), []);
});

test("database.users: each service logs in as its own user on database.url's server, with its password resolved and encoded", async () => {
  const c = config(users);
  const archiver = await databaseConnectionFor(c, "archiver", env);
  assert.equal(archiver.ownRole, true);
  const u = new URL(archiver.url);
  assert.equal(u.username, "postroom_archiver_login");
  assert.equal(decodeURIComponent(u.password), "a p@ss/word");
  assert.equal(u.host, "db.example:5432");
  assert.equal(u.pathname, "/postroom");
  assert.equal(u.searchParams.get("sslmode"), "require");
  assert.deepEqual(await databaseConnectionFor(c, "asd-bridge", env), { url: env.BRIDGE_URL, ownRole: true });
  assert.equal(rolesConfigured(c, {}), true);
  assert.deepEqual(await databaseLogins(c, env), [
    { service: "archiver", user: "postroom_archiver_login", password: "a p@ss/word" },
    { service: "asd-bridge", user: "bridge_login", password: "b@pw" },
    { service: "smtp-sender", user: "postroom_smtp_sender_login", password: "s3nd" },
  ]);
});

test("DATABASE_USER / DATABASE_PASSWORD in a pod win over the config; the set-up reads DATABASE_USER_<SERVICE>", async () => {
  const c = config(shared);
  const pod = await databaseConnectionFor(c, "smtp-sender", { DATABASE_USER: "postroom_smtp_sender_login", DATABASE_PASSWORD: "pw" });
  assert.equal(pod.ownRole, true);
  assert.equal(new URL(pod.url).username, "postroom_smtp_sender_login");
  assert.equal(new URL(pod.url).password, "pw");
  const job = { DATABASE_USER_ASD_BRIDGE: "postroom_asd_bridge_login", DATABASE_PASSWORD_ASD_BRIDGE: "x" };
  assert.equal(rolesConfigured(c, job), true);
  assert.deepEqual(await databaseLogins(c, job), [{ service: "asd-bridge", user: "postroom_asd_bridge_login", password: "x" }]);
});

test("a missing password variable is named, not sent as an empty password", async () => {
  await assert.rejects(databaseConnectionFor(config(users), "smtp-sender", {}), /PG_SENDER is not set/);
});

test("config check: database.users for some services only, or both url and user, is an error with the fix", () => {
  assert.throws(() => config({ ...shared, users: { archiver: { user: "a_login", password: "env:A" } } }), /names archiver but not asd-bridge, smtp-sender/);
  assert.throws(
    () => config({ ...shared, users: { ...users.users, archiver: { user: "a_login", url: "env:X" } } }),
    /has both url and user\/password/,
  );
  assert.throws(() => config({ ...shared, users: { ...users.users, archiver: { url: "postgres://a:b@h/d" } } }), /is not a reference/);
});
