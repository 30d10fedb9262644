// The official Azure IoT Node service SDK (azure-iothub) against iothub-emulator, with a
// device of the official device SDK on the other end: registry create/get/delete,
// direct methods (answered, device offline, device silent), twin get/update with the
// device receiving the desired change, a C2D message the device receives and its feedback
// read by the SDK's feedback receiver (Message.data). One line
// per step; node_service_interop.py asserts on them. The emulator's CA comes from
// NODE_EXTRA_CA_CERTS (REST and service AMQP) and setOptions (the device).
// With "registry": the registry beyond one device: bulk add/update/remove, twin tags,
// createQuery (all, a tags filter, pages of two, COUNT with GROUP BY, module twins),
// getRegistryStatistics, and modules (add, list, get, module twin, a ModuleClient of
// the device SDK connecting with the module's key, remove).
// With "jobs": JobClient: a twin update over a tags query (2 of 3 devices), a direct
// method over a connected device and an offline one, getJob until completed, a job for
// later cancelled, createQuery by type and by status, and refusals.
//   node node_service.js SERVICE_CONNECTION_STRING CA_FILE [registry|jobs]
'use strict';
const fs = require('fs');
const { Registry, Client: ServiceClient, JobClient } = require('azure-iothub');
const { Client: DeviceClient, ModuleClient, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const [serviceCs, caFile] = process.argv.slice(2);
const say = (line) => console.log(line);
const host = /HostName=([^;]+)/.exec(serviceCs)[1];

async function main() {
  const registry = Registry.fromConnectionString(serviceCs);
  const created = (await registry.create({ deviceId: 'svc-dev-1' })).responseBody;
  say('CREATED ' + created.deviceId + ' ' + created.status);
  await registry.create({ deviceId: 'svc-offline' });
  const got = (await registry.get('svc-dev-1')).responseBody;
  say('GOT ' + got.deviceId + ' ' + (got.authentication.symmetricKey.primaryKey === created.authentication.symmetricKey.primaryKey));

  const device = DeviceClient.fromConnectionString(
    `HostName=${host};DeviceId=svc-dev-1;SharedAccessKey=${created.authentication.symmetricKey.primaryKey}`, Amqp);
  await device.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await device.open();
  device.onDeviceMethod('rebootDevice', (req, res) => res.send(200, { rebooting: true }, () => {}));
  device.onDeviceMethod('hang', () => {}); // never answers
  const twin = await device.getTwin();
  const desired = new Promise((resolve) => twin.on('properties.desired', (d) => { if (d.interval) resolve(d); }));
  const c2d = new Promise((resolve) => device.on('message', (m) => { device.complete(m, () => {}); resolve(m); }));
  await new Promise((r) => setTimeout(r, 500));
  say('DEVICE open');

  const service = ServiceClient.fromConnectionString(serviceCs);
  const answer = await service.invokeDeviceMethod('svc-dev-1', { methodName: 'rebootDevice', payload: {}, responseTimeoutInSeconds: 10 });
  say('METHOD ' + answer.result.status + ' ' + JSON.stringify(answer.result.payload));
  try {
    await service.invokeDeviceMethod('svc-offline', { methodName: 'rebootDevice', payload: {}, responseTimeoutInSeconds: 5 });
    say('ERROR an offline device answered');
  } catch (e) {
    say('OFFLINE ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }
  try {
    await service.invokeDeviceMethod('svc-dev-1', { methodName: 'hang', payload: {}, responseTimeoutInSeconds: 5 });
    say('ERROR a silent device answered');
  } catch (e) {
    say('TIMEOUT ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }

  const t = (await registry.getTwin('svc-dev-1')).responseBody;
  await registry.updateTwin('svc-dev-1', { properties: { desired: { interval: 30 } } }, t.etag);
  say('DESIRED ' + JSON.stringify(await desired));

  await service.open();
  const feedback = new Promise((resolve, reject) => service.getFeedbackReceiver((err, receiver) => {
    if (err) return reject(err);
    receiver.on('message', (fm) => {
      receiver.complete(fm, () => {});
      resolve(fm);
    });
  }));
  const door = new Message('open the door');
  door.messageId = 'door-1';
  door.ack = 'full';
  await service.send('svc-dev-1', door);
  const m = await c2d;
  say('C2D ' + m.data.toString());
  const fm = await feedback; // its records are in Message.data, as from IoT Hub
  const records = JSON.parse(fm.data.toString());
  say('FEEDBACK ' + records.map((r) => r.originalMessageId + ':' + r.statusCode).join(','));
  await service.close();

  await device.close();
  await registry.delete('svc-dev-1');
  await registry.delete('svc-offline');
  try {
    await registry.get('svc-dev-1');
    say('ERROR a deleted device was found');
  } catch (e) {
    say('DELETED ' + (e.responseBody ? 'gone' : e.message));
  }
  say('DONE');
  process.exit(0);
}

// Every page of a query, as twins: [twins, pages].
async function allTwins(query) {
  const twins = [];
  let pages = 0;
  do {
    const page = await query.nextAsTwin();
    twins.push(...page.result);
    pages++;
  } while (query.hasMoreResults && pages < 100);
  return [twins, pages];
}

async function registryMain() {
  const registry = Registry.fromConnectionString(serviceCs);
  const ids = ['q-1', 'q-2', 'q-3', 'q-4', 'q-5'];
  const added = (await registry.addDevices(ids.map((deviceId) => ({ deviceId })))).responseBody;
  say('ADDED ' + added.isSuccessful + ' ' + added.errors.length);
  const again = (await registry.addDevices([{ deviceId: 'q-1' }, { deviceId: 'q-6' }])).responseBody;
  say('READDED ' + again.isSuccessful + ' ' + again.errors.map((e) => e.deviceId + ':' + e.errorCode).join(','));
  await registry.removeDevices([{ deviceId: 'q-6' }], true);
  for (const [i, id] of ids.entries()) {
    const twin = (await registry.getTwin(id)).responseBody;
    await registry.updateTwin(id, { tags: { site: i < 3 ? 'north' : 'south', floor: i } }, twin.etag);
  }
  say('TAGGED ' + JSON.stringify((await registry.getTwin('q-2')).responseBody.tags));

  const [all] = await allTwins(registry.createQuery('SELECT * FROM devices'));
  say('ALL ' + all.length + ' ' + all.every((t) => t.deviceId && t.properties && t.properties.desired));
  const [north] = await allTwins(registry.createQuery("SELECT * FROM devices WHERE tags.site = 'north'"));
  say('NORTH ' + north.map((t) => t.deviceId).join(','));
  const [upstairs] = await allTwins(registry.createQuery(
    "SELECT * FROM devices WHERE tags.site = 'south' AND tags.floor >= 4 OR deviceId = 'q-1'"));
  say('FILTERED ' + upstairs.map((t) => t.deviceId).join(','));
  const [paged, pages] = await allTwins(registry.createQuery("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'q-')", 2));
  say('PAGED ' + pages + ' ' + paged.map((t) => t.deviceId).join(','));
  const counted = await registry.createQuery('SELECT COUNT() AS n FROM devices').next();
  say('COUNT ' + JSON.stringify(counted.result));
  const grouped = await registry.createQuery(
    "SELECT tags.site AS site, COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, 'q-') GROUP BY tags.site").next();
  say('GROUPS ' + JSON.stringify(grouped.result));
  try {
    await registry.createQuery('SELECT * FROM devices WHERE (').next();
    say('ERROR a broken query was answered');
  } catch (e) {
    say('BADQUERY ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }

  let stats = (await registry.getRegistryStatistics()).responseBody;
  say('STATS ' + stats.totalDeviceCount + ' ' + stats.enabledDeviceCount + ' ' + stats.disabledDeviceCount);
  const q4 = (await registry.get('q-4')).responseBody;
  const updated = (await registry.updateDevices([{ deviceId: 'q-4', status: 'disabled', etag: q4.etag },
    { deviceId: 'q-5', status: 'disabled' }], true)).responseBody;
  say('UPDATED ' + updated.isSuccessful);
  stats = (await registry.getRegistryStatistics()).responseBody;
  say('STATS2 ' + stats.totalDeviceCount + ' ' + stats.enabledDeviceCount + ' ' + stats.disabledDeviceCount);
  const stale = (await registry.updateDevices([{ deviceId: 'q-4', status: 'enabled', etag: q4.etag }], false)).responseBody;
  say('STALE ' + stale.isSuccessful + ' ' + stale.errors.map((e) => e.errorCode).join(','));

  const mod = (await registry.addModule({ deviceId: 'q-1', moduleId: 'm1' })).responseBody;
  say('MODULE ' + mod.deviceId + '/' + mod.moduleId + ' ' + Boolean(mod.authentication.symmetricKey.primaryKey));
  await registry.addModule({ deviceId: 'q-1', moduleId: 'm2' });
  const onDevice = (await registry.getModulesOnDevice('q-1')).responseBody;
  say('MODULES ' + onDevice.map((m) => m.moduleId).join(','));
  const got = (await registry.getModule('q-1', 'm1')).responseBody;
  say('GOTMODULE ' + got.moduleId + ' ' + (got.authentication.symmetricKey.primaryKey === mod.authentication.symmetricKey.primaryKey));
  const mtwin = (await registry.getModuleTwin('q-1', 'm1')).responseBody;
  await registry.updateModuleTwin('q-1', 'm1', { tags: { role: 'sensor' } }, mtwin.etag);
  const [modTwins] = await allTwins(registry.createQuery("SELECT * FROM devices.modules WHERE tags.role = 'sensor'"));
  say('MODQUERY ' + modTwins.map((t) => t.deviceId + '/' + t.moduleId).join(','));
  const moduleClient = ModuleClient.fromConnectionString(
    `HostName=${host};DeviceId=q-1;ModuleId=m1;SharedAccessKey=${mod.authentication.symmetricKey.primaryKey}`, Amqp);
  await moduleClient.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await moduleClient.open();
  await moduleClient.sendEvent(new Message('from the module'));
  await moduleClient.close();
  say('MODULECLIENT sent');
  await registry.removeModule('q-1', 'm1');
  try {
    await registry.getModule('q-1', 'm1');
    say('ERROR a removed module was found');
  } catch (e) {
    say('MODULEGONE ' + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 200));
  }

  const removed = (await registry.removeDevices(ids.map((deviceId) => ({ deviceId })), true)).responseBody;
  say('REMOVED ' + removed.isSuccessful);
  try {
    await registry.get('q-1');
    say('ERROR a removed device was found');
  } catch (e) {
    say('GONE ' + (e.responseBody ? 'gone' : e.message));
  }
  stats = (await registry.getRegistryStatistics()).responseBody;
  say('STATS3 ' + stats.totalDeviceCount);
  say('DONE');
  process.exit(0);
}

// The status and body of an SDK error, on one line.
function refusal(e) {
  return (e.response ? e.response.statusCode + ' ' : '') + (e.responseBody || e.message).toString().replace(/\s+/g, ' ').slice(0, 300);
}

// Poll getJob until the job has finished (or 30 s went by); its last JobResponse.
async function finishedJob(jobs, jobId) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const job = (await jobs.getJob(jobId)).jobStatus;
    if (['completed', 'failed', 'cancelled'].includes(job.status) || Date.now() > deadline) return job;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const stats = (job) => ['deviceCount', 'succeededCount', 'failedCount', 'runningCount', 'pendingCount']
  .map((k) => job.deviceJobStatistics[k]).join(' ');

async function jobsMain() {
  const registry = Registry.fromConnectionString(serviceCs);
  const jobs = JobClient.fromConnectionString(serviceCs);
  const ids = ['job-1', 'job-2', 'job-3'];
  await registry.addDevices(ids.map((deviceId) => ({ deviceId })));
  for (const [i, id] of ids.entries()) {
    const twin = (await registry.getTwin(id)).responseBody;
    await registry.updateTwin(id, { tags: { fleet: i < 2 ? 'blue' : 'red' } }, twin.etag);
  }

  // a twin update over the two blue devices
  const patch = { etag: '*', tags: { updated: true }, properties: { desired: { firmware: '2.0' } } };
  const scheduled = (await jobs.scheduleTwinUpdate('twin-job-1', "tags.fleet = 'blue'", patch, new Date(), 60)).jobStatus;
  say('TWINJOB_SCHEDULED ' + scheduled.jobId + ' ' + scheduled.type + ' ' + scheduled.status);
  const twinJob = await finishedJob(jobs, 'twin-job-1');
  say('TWINJOB ' + twinJob.status + ' ' + stats(twinJob));
  say('TWINJOB_TIMES ' + [twinJob.createdTime, twinJob.startTime, twinJob.endTime].every((t) => !isNaN(Date.parse(t))));
  const changed = [];
  for (const id of ids) {
    const twin = (await registry.getTwin(id)).responseBody;
    if (twin.properties.desired.firmware === '2.0' && twin.tags.updated === true) changed.push(id);
  }
  say('TWINS_CHANGED ' + changed.join(','));

  // a direct method over a connected device (answering) and a device that is not connected
  const key = (await registry.get('job-1')).responseBody.authentication.symmetricKey.primaryKey;
  const device = DeviceClient.fromConnectionString(`HostName=${host};DeviceId=job-1;SharedAccessKey=${key}`, Amqp);
  await device.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  await device.open();
  const called = new Promise((resolve) => device.onDeviceMethod('reboot', (req, res) => {
    res.send(200, { rebooting: true }, () => {});
    resolve(req.payload);
  }));
  await new Promise((r) => setTimeout(r, 500));
  await jobs.scheduleDeviceMethod('method-job-1', "deviceId IN ['job-1', 'job-3']",
    { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10 }, new Date(), 60);
  say('DEVICE_GOT ' + JSON.stringify(await called));
  const methodJob = await finishedJob(jobs, 'method-job-1');
  say('METHODJOB ' + methodJob.status + ' ' + stats(methodJob) + ' ' + methodJob.cloudToDeviceMethod.methodName);
  await device.close();

  // a job for an hour from now, cancelled before it runs
  const later = (await jobs.scheduleTwinUpdate('later-job', "deviceId = 'job-3'", { properties: { desired: { x: 1 } } },
    new Date(Date.now() + 3600 * 1000), 60)).jobStatus;
  say('LATER ' + later.status);
  const cancelled = (await jobs.cancelJob('later-job')).jobStatus;
  const gotCancelled = (await jobs.getJob('later-job')).jobStatus;
  say('CANCELLED ' + cancelled.status + ' ' + gotCancelled.status + ' ' + stats(gotCancelled));
  const job3 = (await registry.getTwin('job-3')).responseBody;
  say('JOB3_DESIRED ' + JSON.stringify(job3.properties.desired.x === undefined));

  const twinJobs = (await jobs.createQuery('scheduleUpdateTwin').next()).result;
  say('QUERY_TWIN ' + twinJobs.map((j) => j.jobId).join(','));
  const cancelledJobs = (await jobs.createQuery(undefined, 'cancelled').next()).result;
  say('QUERY_CANCELLED ' + cancelledJobs.map((j) => j.jobId).join(','));

  // refusals: a job id over 128 characters, a condition that does not parse, an id taken, no such job
  for (const [name, call] of [
    ['BADID', () => jobs.scheduleTwinUpdate('j'.repeat(129), "deviceId = 'job-1'", patch)],
    ['BADQUERY', () => jobs.scheduleTwinUpdate('bad-query', 'tags.fleet =', patch)],
    ['TAKEN', () => jobs.scheduleTwinUpdate('twin-job-1', "deviceId = 'job-1'", patch)],
    ['NOJOB', () => jobs.getJob('no-such-job')]]) {
    try {
      await call();
      say('ERROR ' + name + ' was accepted');
    } catch (e) {
      say(name + ' ' + refusal(e));
    }
  }
  await registry.removeDevices(ids.map((deviceId) => ({ deviceId })), true);
  say('DONE');
  process.exit(0);
}

const mains = { registry: registryMain, jobs: jobsMain };
(mains[process.argv[4]] || main)().catch((e) => {
  say('ERROR ' + (e && e.message ? e.message : e) + (e && e.responseBody ? ' ' + e.responseBody : ''));
  process.exit(1);
});
