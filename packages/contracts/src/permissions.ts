/**
 * Who may publish and subscribe what on NATS, derived from the names in this package.
 *
 * `ROLES` is the one table of which service produces, consumes, requests, answers and
 * stores what; `natsPermissions` turns it into nats-server permissions (subjects, JetStream API
 * subjects narrowed to the streams, consumers and buckets each service uses, and a private reply
 * inbox per service). A renamed subject, stream, consumer or bucket changes the generated
 * permissions with it, so they cannot drift from the code (the golden test in
 * permissions.test.ts shows every change as a reviewed diff).
 *
 * Only features of nats-server 2.9 are used: per-user publish/subscribe allow lists and
 * `allow_responses`.
 */
import type { Names } from "./names.js";
import { token } from "./names.js";

/** The five deployables. */
export const SERVICES = ["token-service", "imap-poller", "archiver", "asd-bridge", "smtp-sender"] as const;
export type ServiceName = (typeof SERVICES)[number];

/** A tenant and its mailbox ids: what per-mailbox consumer names need. */
export interface PermissionTenant {
  id: string;
  mailboxes: readonly { id: string }[];
}

/** One service's rights, in nats-server's own field names. */
export interface NatsPermissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  /** token-service answers requests: it may publish to the reply subject of a request it received, once. */
  allow_responses?: boolean;
}

type StreamKey = keyof Names["streams"];
type BucketKey = keyof Names["buckets"];

/** What one service does on the bus; every name comes from `Names` (tenant undefined = every tenant). */
interface Role {
  /** Subjects it publishes (events and commands; JetStream or core). */
  publishes(n: Names, tenant: string | undefined): string[];
  /** Durable consumers it binds or creates: stream and consumer name. */
  consumers(n: Names, tenant: string | undefined, tenants: readonly PermissionTenant[]): { stream: StreamKey; durable: string }[];
  /** Streams it makes sure exist (runtime's ensureStreams): the ones it publishes to or consumes. */
  streams: StreamKey[];
  /** Core subscriptions (request handlers). */
  serves?(n: Names, tenant: string | undefined): string[];
  /** Requests it makes (request-reply). */
  requests?(n: Names, tenant: string | undefined): string[];
  /** KV buckets: read (get, watch) and the keys it writes (as subject tails under `$KV.<bucket>.`). */
  kv?(n: Names, tenant: string | undefined): { bucket: BucketKey; writes: string[] }[];
  /** Object stores it puts, gets or deletes in. */
  objects?: BucketKey[];
}

/** A wildcard for "every tenant" or the one tenant. */
const t = (tenant: string | undefined) => tenant ?? "*";

const ROLES: Record<ServiceName, Role> = {
  "token-service": {
    publishes: () => [],
    consumers: () => [],
    streams: [],
    // Credential requests, and delegated sign-ins started by `postroom auth sign-in`.
    serves: (n, tenant) => [n.subjects.wildcard.credentialRequest(tenant), n.subjects.wildcard.signIn(tenant)],
    // Its authentication state beside the poller's entry: <t>.<m>.auth only; and the sealed
    // refresh tokens of delegated mailboxes, a bucket no other service may read.
    kv: (n, tenant) => [
      { bucket: "mailboxStatus", writes: [`${t(tenant)}.*.auth`] },
      { bucket: "oauthGrants", writes: [`${t(tenant)}.*`] },
    ],
  },
  "imap-poller": {
    publishes: (n, tenant) => [n.subjects.wildcard.mailReceived(tenant)],
    // The commit point: one consumer per mailbox on its own archived events.
    consumers: (n, tenant, tenants) =>
      tenants.filter((x) => tenant === undefined || x.id === tenant).flatMap((x) => x.mailboxes.map((m) => ({ stream: "mail" as const, durable: n.consumers.pollerCommit(x.id, m.id) }))),
    streams: ["mail"],
    requests: (n, tenant) => [n.subjects.wildcard.credentialRequest(tenant)],
    kv: (_n, tenant) => [
      { bucket: "cursors", writes: [`${t(tenant)}.>`] },
      // lease.<t>.<m> and replica.<id> heartbeats (replicas of every tenant meet here).
      { bucket: "leases", writes: [">"] },
      // Keys are fingerprints (not tenant-prefixed): the whole bucket.
      { bucket: "ingested", writes: [">"] },
      { bucket: "mailboxStatus", writes: [`${t(tenant)}.*`] },
      { bucket: "control", writes: [] },
    ],
    objects: ["rawMail"],
  },
  archiver: {
    publishes: (n, tenant) => [
      n.subjects.wildcard.mailArchived(tenant),
      // Disk alerts are mailed to the operators through smtp-sender.
      n.subjects.wildcard.mailSend(tenant),
      n.subjects.wildcard.diskAlert(tenant),
      n.subjects.wildcard.loopAlert(tenant),
    ],
    consumers: (n, tenant) => [
      { stream: "mail", durable: n.consumers.archiverReceived(tenant) },
      { stream: "mail", durable: n.consumers.archiverSent(tenant) },
    ],
    streams: ["mail", "sendCommands", "alerts"],
    // ingest.<t>.<m>: pausing and resuming ingestion (ingestKey).
    kv: (_n, tenant) => [{ bucket: "control", writes: [`ingest.${t(tenant)}.*`] }],
    objects: ["rawMail"],
  },
  "asd-bridge": {
    publishes: (n, tenant) => [
      n.subjects.wildcard.mailSend(tenant),
      // offered, assigned, completed (the sessions stream takes every session event).
      n.subjects.wildcard.session(tenant),
    ],
    consumers: (n, tenant) => [
      { stream: "mail", durable: n.consumers.asdBridgeArchived(tenant) },
      { stream: "mail", durable: n.consumers.asdBridgeSent(tenant) },
      { stream: "mail", durable: n.consumers.asdBridgeSendFailed(tenant) },
    ],
    streams: ["mail", "sendCommands", "sessions"],
    // The tenant's ACD reachability and unanswered counts (acdStatusKey: the tenant id).
    kv: (_n, tenant) => [{ bucket: "acdStatus", writes: [t(tenant)] }],
  },
  "smtp-sender": {
    publishes: (n, tenant) => [n.subjects.wildcard.mailSent(tenant), n.subjects.wildcard.mailSendFailed(tenant)],
    consumers: (n, tenant) => [{ stream: "sendCommands", durable: n.consumers.smtpSender(tenant) }],
    streams: ["mail", "sendCommands"],
    requests: (n, tenant) => [n.subjects.wildcard.credentialRequest(tenant)],
    // Its outgoing state beside the poller's entry: <t>.<m>.smtp only; and its send receipts.
    kv: (_n, tenant) => [
      { bucket: "mailboxStatus", writes: [`${t(tenant)}.*.smtp`] },
      { bucket: "sendReceipts", writes: [`${t(tenant)}.*`] },
    ],
    objects: ["rawMail"],
  },
};

/**
 * The reply inbox prefix of a service's connections. Only that service may subscribe under it,
 * so a reply (a credential above all) reaches nobody else. Used by nats-kit's `connectNats`.
 */
export function inboxPrefix(service: ServiceName, tenant?: string): string {
  return tenant === undefined ? `_INBOX_${service}` : `_INBOX_${service}_${token("tenant id", tenant)}`;
}

/** The streams a service makes sure exist at start, as definitions' names. */
export function streamsOf(n: Names, service: ServiceName): string[] {
  return ROLES[service].streams.map((s) => n.streams[s]);
}

/** JetStream API subjects to bind, create, update and read a stream's durable consumer. */
function consumerApi(stream: string, durable: string): string[] {
  return [
    `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
    // nats-server 2.9 takes the filter in the subject (CREATE.<stream>.<name>.<filter>); older clients use DURABLE.CREATE.
    `$JS.API.CONSUMER.CREATE.${stream}.${durable}`,
    `$JS.API.CONSUMER.CREATE.${stream}.${durable}.>`,
    `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.${durable}`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
    // Acks, naks and "still working" go to the reply subject of each delivered message.
    `$JS.ACK.${stream}.${durable}.>`,
  ];
}

/**
 * Reading a KV bucket or object store: direct and stream gets, and the ephemeral ordered
 * consumers watches and object reads create and delete. The bucket's stream is the limit.
 */
function storeReadApi(stream: string): string[] {
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
    `$JS.FC.${stream}.>`,
    `$JS.ACK.${stream}.>`,
  ];
}

/** Creating (or confirming) a stream at start. */
function streamAdminApi(stream: string): string[] {
  return [`$JS.API.STREAM.INFO.${stream}`, `$JS.API.STREAM.CREATE.${stream}`, `$JS.API.STREAM.UPDATE.${stream}`];
}

/** KV buckets are streams named KV_<bucket>, keys published under $KV.<bucket>.<key>. */
const kvStream = (bucket: string) => `KV_${bucket}`;
/** Object stores are streams named OBJ_<bucket>, chunks under $O.<bucket>.C.<id>, metadata under $O.<bucket>.M.<name>. */
const objStream = (bucket: string) => `OBJ_${bucket}`;

/**
 * One service's least-privilege permissions. `tenant` narrows every per-tenant subject, consumer
 * and key to one tenant (per-tenant deployments); `tenants` lists the configured tenants and
 * mailboxes (imap-poller's consumers are per mailbox).
 */
export function natsPermissions(n: Names, service: ServiceName, options: { tenant?: string | undefined; tenants: readonly PermissionTenant[] }): NatsPermissions {
  const role = ROLES[service];
  const tenant = options.tenant === undefined ? undefined : token("tenant id", options.tenant);
  const publish = new Set<string>();
  const subscribe = new Set<string>();
  const inbox = inboxPrefix(service, tenant);
  // Replies (JetStream acks, API answers, credential replies, deliveries of ordered consumers)
  // come only to the service's own inbox prefix.
  subscribe.add(`${inbox}.>`);
  // Every JetStream client asks for the account's JetStream info first.
  publish.add("$JS.API.INFO");
  for (const s of role.publishes(n, tenant)) publish.add(s);
  for (const s of role.requests?.(n, tenant) ?? []) publish.add(s);
  for (const s of role.serves?.(n, tenant) ?? []) subscribe.add(s);
  for (const s of role.streams) for (const api of streamAdminApi(n.streams[s])) publish.add(api);
  for (const c of role.consumers(n, tenant, options.tenants)) for (const api of consumerApi(n.streams[c.stream], c.durable)) publish.add(api);
  for (const { bucket, writes } of role.kv?.(n, tenant) ?? []) {
    const name = n.buckets[bucket];
    for (const api of [...streamAdminApi(kvStream(name)), ...storeReadApi(kvStream(name))]) publish.add(api);
    for (const key of writes) publish.add(`$KV.${name}.${key}`);
  }
  for (const bucket of role.objects ?? []) {
    const name = n.buckets[bucket];
    const stream = objStream(name);
    for (const api of [...streamAdminApi(stream), ...storeReadApi(stream), `$JS.API.STREAM.PURGE.${stream}`]) publish.add(api);
    publish.add(`$O.${name}.>`);
  }
  return {
    publish: { allow: [...publish] },
    subscribe: { allow: [...subscribe] },
    ...(role.serves ? { allow_responses: true } : {}),
  };
}

/** A NATS user of one service: the name it connects with and the password (or a reference to it). */
export interface NatsUser {
  service: ServiceName;
  /** Per-tenant deployments: the tenant this user is limited to. */
  tenant?: string | undefined;
  user: string;
  password: string;
}

/** The `users` list of nats-server's `authorization` block (or the official chart's `config.merge.authorization`). */
export function natsAuthorizationUsers(n: Names, users: readonly NatsUser[], tenants: readonly PermissionTenant[]): { user: string; password: string; permissions: NatsPermissions }[] {
  return users.map((u) => ({ user: u.user, password: u.password, permissions: natsPermissions(n, u.service, { tenant: u.tenant, tenants }) }));
}

/**
 * nats-server's `authorization { users = [...] }` block as configuration text. JSON is valid in
 * nats-server's configuration format, so every subject is quoted as a JSON string (`$` and `>`
 * need no escaping there).
 */
export function natsAuthorizationBlock(
  n: Names,
  users: readonly NatsUser[],
  tenants: readonly PermissionTenant[],
  /** Users that are not services (an operator, a test's observer), with their own permissions or none (every right). */
  others: readonly { user: string; password: string; permissions?: NatsPermissions }[] = [],
): string {
  const list = [...natsAuthorizationUsers(n, users, tenants), ...others];
  // A password given as $NAME is left unquoted: nats-server then reads it from that environment variable.
  const text = JSON.stringify(list, null, 2).replace(/"password": "(\$[A-Z_][A-Z0-9_]*)"/g, '"password": $1');
  return `authorization {\n  users = ${text.replace(/\n/g, "\n  ")}\n}\n`;
}

/** The users of a deployment: one per service, or (per tenant) token-service plus `<service>-<tenant>` for the others, as the chart deploys them. */
export function deploymentUsers(tenants: readonly PermissionTenant[], perTenant: boolean): Omit<NatsUser, "password">[] {
  if (!perTenant) return SERVICES.map((service) => ({ service, user: service }));
  return [
    { service: "token-service", user: "token-service" },
    ...tenants.flatMap((t) => SERVICES.filter((s) => s !== "token-service").map((service) => ({ service, tenant: t.id, user: `${service}-${t.id}` }))),
  ];
}

/** The environment variable a user's password is read from (nats-server side and chart). */
export function natsPasswordVariable(user: string): string {
  return `NATS_PASSWORD_${user.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

/**
 * Values for the official NATS Helm chart (nats-io/k8s, 1.x): the users under
 * `config.merge.authorization` with each password read from the environment (`<< $VAR >>`), and
 * that environment from one Secret whose keys are the user names — the same Secret the Postroom
 * chart gives each Deployment its own password from.
 */
export function natsHelmValues(n: Names, users: readonly Omit<NatsUser, "password">[], tenants: readonly PermissionTenant[], secretName: string): Record<string, unknown> {
  const withRefs = users.map((u) => ({ ...u, password: `<< $${natsPasswordVariable(u.user)} >>` }));
  return {
    config: { merge: { authorization: { users: natsAuthorizationUsers(n, withRefs, tenants) } } },
    container: {
      env: Object.fromEntries(users.map((u) => [natsPasswordVariable(u.user), { valueFrom: { secretKeyRef: { name: secretName, key: u.user } } }])),
    },
  };
}
