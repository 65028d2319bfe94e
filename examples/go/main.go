// A minimal, correct h5pay intent publisher and result consumer
// (amqp091-go): publisher confirms, persistent, mandatory with a return
// handler, a message_id that stays the same on retry, correlation_id and
// reply_to, and a consumer that binds its routing keys and deduplicates on
// event_id.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func env(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func main() {
	url := env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
	mch := env("MCH_NO", "EXAMPLE01")
	trace := env("PAY_TRACE_NO", fmt.Sprintf("go-%d", time.Now().UnixMilli()))

	conn, err := amqp.Dial(url)
	must(err)
	defer conn.Close()
	ch, err := conn.Channel()
	must(err)
	must(ch.Confirm(false))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))

	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(err)
	for _, key := range []string{"h5pay.result.*." + mch, "h5pay.payment.*." + mch} {
		must(ch.QueueBind(q.Name, key, "h5pay.results", false, nil))
	}
	deliveries, err := ch.Consume(q.Name, "", false, true, false, false, nil)
	must(err)

	body, _ := json.Marshal(map[string]any{
		"pay_trace_no": trace, "mch_no": mch, "pay_type": "wechat", "total_amount": 100,
		"metadata": map[string]string{"order_id": "order-" + trace},
	})
	msg := amqp.Publishing{
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     trace, // the same on every retry of this intent
		CorrelationId: "order-" + trace,
		ReplyTo:       q.Name,
		Body:          body,
	}
	confirmed := false
	for attempt := 1; attempt <= 3 && !confirmed; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "h5pay.intents", "h5pay.intent.example", true, false, msg)
		if err == nil && dc.Wait() {
			confirmed = true
		} else {
			time.Sleep(time.Duration(attempt) * time.Second) // same body, same MessageId
		}
		cancel()
	}
	if !confirmed {
		fail("the broker never confirmed the intent")
	}
	select {
	case r := <-returns:
		fail("unroutable: " + r.ReplyText)
	default:
	}

	seen := map[string]bool{}
	duplicates := 0
	var result map[string]any
	timeout := time.After(30 * time.Second)
	var settle <-chan time.Time
loop:
	for {
		select {
		case d := <-deliveries:
			var event map[string]any
			must(json.Unmarshal(d.Body, &event))
			must(d.Ack(false))
			id, _ := event["event_id"].(string)
			if seen[id] { // at least once: the same event may come twice
				duplicates++
				continue
			}
			seen[id] = true
			if event["schema"] == "h5pay.result.v1" && event["pay_trace_no"] == trace {
				if d.CorrelationId != "order-"+trace {
					fail("correlation_id " + d.CorrelationId)
				}
				result = event
				settle = time.After(time.Second) // the reply_to copy, deduplicated
			}
		case <-settle:
			break loop
		case <-timeout:
			break loop
		}
	}
	if result == nil {
		fail("no result event for " + trace)
	}
	fmt.Printf("go: %s -> %v, %d duplicate(s) dropped\n", trace, result["status"], duplicates)
	if result["status"] != "ready" {
		os.Exit(1)
	}
}

func must(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}
