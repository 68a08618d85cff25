#!/usr/bin/env node
import { archiveSettingsFor, loadConfig } from "@postroom/config";
import { errorFields } from "@postroom/telemetry";
import { consumerLagReader } from "@postroom/nats-kit";
import { runPostroomService } from "@postroom/runtime";
import { Archiver } from "./archiver.js";

/** How often the archive gauges are refreshed from the disk guards' own measurements. */
const DISK_METRICS_EVERY_MS = 15_000;

await runPostroomService({
  name: "archiver",
  database: true,
  async start({ nc, names, config, pool, logger, env, telemetry }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const archiver = new Archiver({ nc, names, config, pool: pool!, logger, ...(tenant ? { tenant } : {}) });
    await archiver.start();
    telemetry.metrics.observeConsumers(
      consumerLagReader(nc, [
        { stream: names.streams.mail, durable: names.consumers.archiverReceived(tenant) },
        { stream: names.streams.mail, durable: names.consumers.archiverSent(tenant) },
      ]),
    );
    // Usage, quota and free space as gauges, so the disk dashboard moves before any alert fires.
    const tenantsByRoot = new Map<string, Set<string>>();
    for (const t of config.tenants) {
      if (tenant !== undefined && t.id !== tenant) continue;
      for (const m of t.mailboxes) {
        const root = archiveSettingsFor(config, m).path;
        tenantsByRoot.set(root, (tenantsByRoot.get(root) ?? new Set()).add(t.id));
      }
    }
    const publishDisks = () => {
      for (const disk of archiver.stats.disks()) {
        for (const t of tenantsByRoot.get(disk.root) ?? []) {
          telemetry.metrics.archiveUsage(t, { usedBytes: disk.usedBytes, freeBytes: disk.fsFreeBytes, quotaBytes: disk.quotaBytes });
        }
      }
    };
    publishDisks();
    const timer = setInterval(publishDisks, DISK_METRICS_EVERY_MS);
    timer.unref();
    // SIGHUP re-reads the config file: a new quota, threshold or reserve applies without a restart
    // (ingestion keeps running; a pause the new settings lift ends). A broken file keeps the old settings.
    const onHangup = () => {
      loadConfig(env)
        .then((next) => archiver.reloadArchiveSettings(next, "SIGHUP"))
        .catch((error: unknown) => {
          logger.error({ ...errorFields(error) }, "config reload failed; the previous archive settings stay");
          return archiver.reloadFailed(error, "SIGHUP");
        });
    };
    process.on("SIGHUP", onHangup);
    return {
      async stop() {
        process.removeListener("SIGHUP", onHangup);
        clearInterval(timer);
        await archiver.stop();
      },
    };
  },
});
