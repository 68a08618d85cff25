import { randomBytes } from "node:crypto";
import type { PostroomConfigInput } from "@postroom/config";
import { names, natsAuthorizationBlock, SERVICES, type NatsUser, type ServiceName } from "@postroom/contracts";
import { startPrivateNats, type PrivateNats, type PrivateNatsTls } from "@postroom/testkit";

/** The test's own user on a secure bus: it watches and drives the system (KV, events, commands), as no service may. */
export const OBSERVER = "e2e-observer";

/**
 * A private nats-server with one user per service, each with the permissions contracts generate
 * for it, plus the test's observer with every right. `apply` points a configuration at it: the
 * server URL, `nats.users` with each password as an `env:` reference, and (with TLS) `nats.tls`.
 */
export interface SecureBus {
  nats: PrivateNats;
  /** Each service's password, by service name, and the observer's. */
  passwords: Record<string, string>;
  /** Environment that holds the passwords the config references. */
  env: Record<string, string>;
  apply(config: PostroomConfigInput): void;
}

const envName = (service: string) => `NATS_PASSWORD_${service.toUpperCase().replaceAll("-", "_")}`;

/** POSTROOM_E2E_SECURE=1 (secure mode, see secure.ts) or POSTROOM_E2E_SECURE_NATS=1: e2e worlds run on a secure bus by default. */
export function secureByDefault(): boolean {
  return process.env.POSTROOM_E2E_SECURE === "1" || process.env.POSTROOM_E2E_SECURE_NATS === "1";
}

export async function startSecureBus(
  config: PostroomConfigInput,
  options: {
    tls?: PrivateNatsTls & { clientCaPath?: string };
    /** More service users, e.g. per-tenant ones (`asd-bridge-acme`), their passwords in `passwords` under their user name. */
    extraUsers?: { service: ServiceName; tenant?: string; user: string }[];
  } = {},
): Promise<SecureBus> {
  const n = names(config.nats?.namespace);
  const passwords: Record<string, string> = {};
  for (const s of [...SERVICES, OBSERVER]) passwords[s] = randomBytes(12).toString("hex");
  const users: NatsUser[] = SERVICES.map((service) => ({ service, user: service, password: passwords[service]! }));
  for (const extra of options.extraUsers ?? []) {
    passwords[extra.user] = randomBytes(12).toString("hex");
    users.push({ ...extra, password: passwords[extra.user]! });
  }
  const tenants = (config.tenants ?? []).map((t) => ({ id: t.id, mailboxes: (t.mailboxes ?? []).map((m) => ({ id: m.id })) }));
  // The observer has every right: it is the test, not a service.
  const authorization = natsAuthorizationBlock(n, users, tenants, [{ user: OBSERVER, password: passwords[OBSERVER]! }]);
  const nats = await startPrivateNats({ authorization, ...(options.tls ? { tls: options.tls } : {}) });
  const env: Record<string, string> = {};
  for (const s of SERVICES) env[envName(s)] = passwords[s]!;
  return {
    nats,
    passwords,
    env,
    apply(c) {
      c.nats = {
        ...c.nats,
        url: nats.url,
        users: Object.fromEntries(SERVICES.map((s) => [s, { user: s, password: `env:${envName(s)}` }])) as NonNullable<NonNullable<PostroomConfigInput["nats"]>["users"]>,
        ...(options.tls ? { tls: { ca: options.tls.clientCaPath ?? options.tls.certPath } } : {}),
      };
    },
  };
}
