#!/usr/bin/env node
import { consumerLagReader } from "@postroom/nats-kit";
import { runPostroomService, watchMailboxStatus } from "@postroom/runtime";
import { Poller } from "./poller.js";

await runPostroomService({
  name: "imap-poller",
  async start({ nc, names, config, logger, tenants, telemetry }) {
    const poller = new Poller({ nc, names, config, logger, ...(tenants ? { tenants } : {}) });
    await poller.start();
    const served = config.tenants.filter((t) => !tenants || tenants.includes(t.id));
    telemetry.metrics.observeConsumers(
      consumerLagReader(nc, served.flatMap((t) => t.mailboxes.map((m) => ({ stream: names.streams.mail, durable: names.consumers.pollerCommit(t.id, m.id) })))),
    );
    const status = await watchMailboxStatus({ nc, names, telemetry, tenants, replicas: config.nats.replicas });
    return {
      async stop() {
        status.stop();
        await poller.stop();
      },
    };
  },
});
