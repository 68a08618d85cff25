import { resolveSecret, type PostroomConfig } from "@postroom/config";
import { inboxPrefix, type ServiceName } from "@postroom/contracts";
import { connectNats, type ConnectOptions, type NatsConnection } from "@postroom/nats-kit";

/** The one tenant a replica is limited to (POSTROOM_TENANT, or a single POSTROOM_TENANTS entry), if any. */
export function deploymentTenant(env: NodeJS.ProcessEnv): string | undefined {
  const one = env.POSTROOM_TENANT?.trim();
  if (one) return one;
  const list = env.POSTROOM_TENANTS?.split(",").map((t) => t.trim()).filter(Boolean) ?? [];
  return list.length === 1 ? list[0] : undefined;
}

/**
 * How a service connects: its own NATS user (NATS_USER / NATS_PASSWORD in a pod, else
 * `nats.users.<service>` of the config, the password resolved here from its reference), its own
 * reply inbox prefix (per tenant when the replica serves one tenant, matching the generated
 * permissions), and TLS from `nats.tls`. Without a user the connection is anonymous, as before.
 */
export async function natsOptionsFor(config: PostroomConfig, service: ServiceName, env: NodeJS.ProcessEnv): Promise<ConnectOptions> {
  const configured = config.nats.users?.[service];
  const user = env.NATS_USER || configured?.user;
  const password = env.NATS_PASSWORD || (configured ? await resolveSecret(configured.password, env) : undefined);
  const tls = config.nats.tls;
  return {
    url: config.nats.url,
    name: `${service}-${process.pid}`,
    ...(user ? { user, password, inboxPrefix: inboxPrefix(service, deploymentTenant(env)) } : {}),
    ...(tls ? { tls: { caFile: tls.ca, certFile: tls.cert, keyFile: tls.key, verify: tls.verify } } : {}),
  };
}

/** Connects a service as itself (see {@link natsOptionsFor}). */
export async function connectService(config: PostroomConfig, service: ServiceName, env: NodeJS.ProcessEnv): Promise<NatsConnection> {
  return connectNats(await natsOptionsFor(config, service, env));
}
