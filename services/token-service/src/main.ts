#!/usr/bin/env node
import { resolve } from "node:path";
import { loadConfig, resolveSecret } from "@postroom/config";
import { names } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { connectService } from "@postroom/runtime";
import { createLogger, natsCheck, operationsHost, operationsPort, runService, startTelemetry } from "@postroom/telemetry";
import { CredentialService } from "./credential-service.js";
import { GrantStore, grantKey } from "./grant-store.js";

const logger = createLogger({ service: "token-service" });

await runService(logger, async () => {
  // First, so /healthz answers while NATS is awaited and instruments are real (see @postroom/runtime).
  const telemetry = await startTelemetry({ service: "token-service", port: operationsPort(process.env), host: operationsHost(process.env), logger });
  const config = await loadConfig(process.env);
  // Requests name their mailbox in the subject, which any client may invent: configured ids only as labels.
  telemetry.metrics.limitLabelsTo(config.tenants);
  const nc = await connectService(config, "token-service", process.env);
  telemetry.addReadinessCheck("nats", natsCheck(nc));
  let started = false;
  telemetry.addReadinessCheck("started", () => started);
  const n = names(config.nats.namespace);
  const statusKv = await openKv(nc, n.buckets.mailboxStatus, { replicas: config.nats.replicas });
  const tenants = process.env.POSTROOM_TENANTS?.split(",").filter(Boolean);
  // The authentication method is the bounded label of an acquisition; the config knows it.
  const methodOf = (tenant: string, mailbox: string) => config.tenants.find((t) => t.id === tenant)?.mailboxes.find((m) => m.id === mailbox)?.auth?.type ?? "unknown";
  const events = {
    onAnswered: (e: { tenant: string; mailbox: string; outcome: string }) =>
      e.outcome === "ok" ? telemetry.metrics.tokenAcquired(e.tenant, e.mailbox, methodOf(e.tenant, e.mailbox)) : telemetry.metrics.tokenFailed(e.tenant, e.mailbox, e.outcome),
  };
  // Delegated grants: the sealed store, and every grant re-sealed with the active key (rotation).
  let grants: GrantStore | undefined;
  if (config.tokenStore) {
    const keys = await Promise.all([config.tokenStore.key, ...config.tokenStore.previousKeys].map(async (ref) => grantKey(await resolveSecret(ref, process.env))));
    grants = new GrantStore(await openKv(nc, n.buckets.oauthGrants, { replicas: config.nats.replicas, history: 1 }), keys);
    const delegated = config.tenants
      .filter((t) => !tenants?.length || tenants.includes(t.id))
      .flatMap((t) => t.mailboxes.filter((m) => [m.auth.type, m.smtp?.auth?.type].some((x) => x === "microsoft-delegated" || x === "google-delegated")).map((m) => n.mailboxKey(t.id, m.id)));
    const rewrapped = await grants.rewrapAll(delegated);
    if (rewrapped > 0) logger.info({ rewrapped }, "delegated grants re-sealed with the current tokenStore.key");
  }
  const configPath = process.env.POSTROOM_CONFIG ? resolve(process.env.POSTROOM_CONFIG) : undefined;
  const service = new CredentialService({ nc, names: n, config, logger, statusKv, events, ...(tenants ? { tenants } : {}), ...(grants ? { grants } : {}), ...(configPath ? { configPath } : {}) });
  await service.start();
  started = true;
  return {
    async stop() {
      await service.stop();
      await nc.drain();
      await telemetry.stop();
    },
  };
});
