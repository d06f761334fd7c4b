package dev.weir.bench;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The job of Weir's kafka_pipeline bench in Kafka Streams: JSON access events keyed by client →
 * parse (Jackson) → event time from the record's {@code ts} → count per client in 10 s tumbling
 * windows (2 s grace, emitted when the window closes) → a JSON line per window to the output topic.
 *
 * <p>Arguments: {@code BOOTSTRAP INPUT OUTPUT APPLICATION_ID GUARANTEE THREADS}, GUARANTEE being
 * {@code exactly_once_v2} or {@code at_least_once}. It runs until the application's committed
 * offsets reach the input's end offsets (every input record processed and committed), then prints
 * one line {@code RESULT wall_s=.. cpu_s=.. hwm_kb=..}: wall time since main started, the process's
 * CPU time (ProcessHandle, JVM start and JIT included) and its peak RSS (VmHWM).
 */
public final class StreamsWindowCount {
    /** The fields the job reads; the others are parsed and skipped. */
    public static final class Access {
        public long ts;
        public String client;
        public int status;
        public long bytes;
    }

    private static final ObjectMapper MAPPER =
            new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    private static Serde<Access> accessSerde() {
        Deserializer<Access> de = (topic, data) -> {
            try {
                return MAPPER.readValue(data, Access.class);
            } catch (java.io.IOException e) {
                throw new org.apache.kafka.common.errors.SerializationException(e);
            }
        };
        Serializer<Access> ser = (topic, a) -> {
            try {
                return MAPPER.writeValueAsBytes(a);
            } catch (java.io.IOException e) {
                throw new org.apache.kafka.common.errors.SerializationException(e);
            }
        };
        return Serdes.serdeFrom(ser, de);
    }

    private static long vmHwmKb() throws java.io.IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }

    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        if (args.length != 6) {
            System.err.println("usage: StreamsWindowCount BOOTSTRAP INPUT OUTPUT APPLICATION_ID GUARANTEE THREADS");
            System.exit(2);
        }
        String bootstrap = args[0], input = args[1], output = args[2], appId = args[3], guarantee = args[4];
        int threads = Integer.parseInt(args[5]);

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        props.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("kafka-streams-bench").toString());
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), accessSerde())
                        .withTimestampExtractor((record, partitionTime) -> ((Access) record.value()).ts))
                .groupByKey()
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(2)))
                .emitStrategy(EmitStrategy.onWindowClose())
                .count(Materialized.with(Serdes.String(), Serdes.Long()))
                .toStream()
                .map((window, n) -> KeyValue.pair(window.key(),
                        "{\"key\":\"" + window.key() + "\",\"start\":" + window.window().start()
                                + ",\"end\":" + window.window().end() + ",\"value\":" + n + "}"))
                .to(output, Produced.with(Serdes.String(), Serdes.String()));

        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            List<TopicPartition> partitions = admin.describeTopics(List.of(input)).allTopicNames().get()
                    .get(input).partitions().stream()
                    .map(p -> new TopicPartition(input, p.partition()))
                    .collect(Collectors.toList());
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            partitions.forEach(tp -> latest.put(tp, OffsetSpec.latest()));
            Map<TopicPartition, Long> ends = new HashMap<>();
            admin.listOffsets(latest).all().get().forEach((tp, info) -> ends.put(tp, info.offset()));

            KafkaStreams streams = new KafkaStreams(builder.build(), props);
            streams.start();
            long deadline = System.nanoTime() + Duration.ofMinutes(30).toNanos();
            while (true) {
                Map<TopicPartition, OffsetAndMetadata> committed =
                        admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
                boolean done = ends.entrySet().stream().allMatch(e -> {
                    OffsetAndMetadata c = committed.get(e.getKey());
                    return c != null && c.offset() >= e.getValue();
                });
                if (done) {
                    break;
                }
                if (System.nanoTime() > deadline || streams.state() == KafkaStreams.State.ERROR) {
                    System.err.println("error: Kafka Streams did not commit the whole input (state "
                            + streams.state() + ")");
                    System.exit(1);
                }
                Thread.sleep(50);
            }
            double wall = (System.nanoTime() - started) / 1e9;
            double cpu = ProcessHandle.current().info().totalCpuDuration().orElse(Duration.ZERO).toNanos() / 1e9;
            long hwm = vmHwmKb();
            System.out.printf("RESULT wall_s=%.3f cpu_s=%.3f hwm_kb=%d%n", wall, cpu, hwm);
            System.out.flush();
            streams.close(Duration.ofSeconds(30));
        }
        System.exit(0);
    }
}
