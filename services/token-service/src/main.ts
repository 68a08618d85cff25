#!/usr/bin/env node
import { loadConfig } from "@postroom/config";
import { names } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { createLogger, natsCheck, operationsPort, runService, startTelemetry } from "@postroom/telemetry";
import { CredentialService } from "./credential-service.js";

const logger = createLogger({ service: "token-service" });

await runService(logger, async () => {
  // First, so /healthz answers while NATS is awaited and instruments are real (see @postroom/runtime).
  const telemetry = await startTelemetry({ service: "token-service", port: operationsPort(process.env), logger });
  const config = await loadConfig(process.env);
  const nc = await connectNats({ url: config.nats.url, name: `token-service-${process.pid}` });
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
  const service = new CredentialService({ nc, names: n, config, logger, statusKv, events, ...(tenants ? { tenants } : {}) });
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
