"""A minimal, correct h5pay intent publisher and result consumer (pika).

What it does right (docs/PUBLISHING.md):
* publisher confirms, persistent delivery, mandatory with unroutable handling;
* a message_id that stays the same on every retry of this intent;
* correlation_id and reply_to;
* a consumer bound to the routing keys it needs, deduplicating on event_id.
Exits 0 once its intent's result event arrived and is `ready`.
"""
import json
import os
import sys
import time

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
MCH_NO = os.environ.get("MCH_NO", "EXAMPLE01")
TRACE = os.environ.get("PAY_TRACE_NO", f"py-{int(time.time() * 1000)}")

conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
ch = conn.channel()
ch.confirm_delivery()  # basic_publish now waits for the broker's ack (or raises)

# Our own queue for results and payment events of our merchant. A real
# service uses a durable, named queue; this example's goes away with it.
q = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
for key in (f"h5pay.result.*.{MCH_NO}", f"h5pay.payment.*.{MCH_NO}"):
    ch.queue_bind(queue=q, exchange="h5pay.results", routing_key=key)

intent = {"pay_trace_no": TRACE, "mch_no": MCH_NO, "pay_type": "wechat", "total_amount": 100,
          "metadata": {"order_id": f"order-{TRACE}"}}
props = pika.BasicProperties(
    content_type="application/json",
    delivery_mode=2,              # persistent: survives a broker restart
    message_id=TRACE,             # the same on every retry of this intent
    correlation_id=f"order-{TRACE}",
    reply_to=q,                   # the result also comes here (best effort)
)
body = json.dumps(intent).encode()
for attempt in range(1, 4):
    try:
        ch.basic_publish("h5pay.intents", "h5pay.intent.example", body, props, mandatory=True)
        break  # confirmed by the broker
    except pika.exceptions.UnroutableError:
        sys.exit("unroutable: is the worker's topology declared? (start h5pay-worker run)")
    except pika.exceptions.NackError:
        time.sleep(attempt)  # publish again: same body, same message_id
else:
    sys.exit("the broker never confirmed the intent")

seen = set()
duplicates = 0
result = None
deadline = time.time() + 30
while time.time() < deadline and (result is None or time.time() < settle):
    method, properties, payload = ch.basic_get(q, auto_ack=False)
    if method is None:
        time.sleep(0.05)
        continue
    event = json.loads(payload)
    ch.basic_ack(method.delivery_tag)
    if event["event_id"] in seen:  # at least once: the same event may come twice
        duplicates += 1
        continue
    seen.add(event["event_id"])
    if event.get("schema") == "h5pay.result.v1" and event["pay_trace_no"] == TRACE:
        assert properties.correlation_id == f"order-{TRACE}", properties.correlation_id
        result = event
        settle = time.time() + 1.0  # the reply_to copy, deduplicated above
conn.close()
if result is None:
    sys.exit(f"no result event for {TRACE}")
print(f"python: {TRACE} -> {result['status']} (code_url host: {result['code_url'].split('/')[2] if result['code_url'] else '-'}), "
      f"{duplicates} duplicate(s) dropped")
sys.exit(0 if result["status"] == "ready" else 1)
