// The reference reader of the tests: for each metadata file given, prints
// one line, a JSON array of the table version's live rows (objects keyed by
// column name), read by Iceberg Java's generic reader (IcebergGenerics),
// which applies position and equality deletes. One JVM reads many versions.
//
//   java -cp <libs>/*:<classes> [-Diceberg.<property>=<value>…] tributary.IcebergRead <metadata.json>…
//   java -cp … tributary.IcebergRead --hive <thrift://host:port> <db.table>…
//
// With --hive the tables are loaded through Iceberg Java's HiveCatalog
// (the metastore's current metadata_location) instead of from files.
//
// Files are opened by scheme (ResolvingFileIO: local paths through Hadoop,
// s3:// through S3FileIO); system properties `iceberg.<name>` become FileIO
// properties (`-Diceberg.s3.endpoint=http://127.0.0.1:9000`, …).
//
// Values: int, float, double and boolean as JSON values; long and decimal as
// strings (nothing rounded); dates and times as ISO-8601 strings; binary as
// base64; null as null. Rows come in file order; callers compare as sets.
package tributary;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.BaseTable;
import org.apache.iceberg.StaticTableOperations;
import org.apache.iceberg.Table;
import org.apache.iceberg.data.IcebergGenerics;
import org.apache.iceberg.catalog.TableIdentifier;
import org.apache.iceberg.data.Record;
import org.apache.iceberg.hive.HiveCatalog;
import org.apache.iceberg.io.CloseableIterable;
import org.apache.iceberg.io.ResolvingFileIO;
import org.apache.iceberg.types.Types;

public final class IcebergRead {
  public static void main(String[] args) throws Exception {
    if (args.length == 0) {
      System.err.println("usage: IcebergRead <metadata.json location>...");
      System.exit(2);
    }
    Map<String, String> properties = new LinkedHashMap<>();
    for (String name : System.getProperties().stringPropertyNames()) {
      if (name.startsWith("iceberg.")) {
        properties.put(name.substring("iceberg.".length()), System.getProperty(name));
      }
    }
    ResolvingFileIO io = new ResolvingFileIO();
    io.setConf(new Configuration());
    io.initialize(properties);
    ObjectMapper json = new ObjectMapper();
    StringBuilder out = new StringBuilder();
    HiveCatalog hive = null;
    int first = 0;
    if (args[0].equals("--hive")) {
      hive = new HiveCatalog();
      hive.setConf(new Configuration());
      Map<String, String> catalogProperties = new LinkedHashMap<>(properties);
      catalogProperties.put("uri", args[1]);
      hive.initialize("hive", catalogProperties);
      first = 2;
    }
    for (String location : java.util.Arrays.copyOfRange(args, first, args.length)) {
      Table table =
          hive != null
              ? hive.loadTable(TableIdentifier.parse(location))
              : new BaseTable(new StaticTableOperations(location, io), location);
      List<Map<String, Object>> rows = new ArrayList<>();
      try (CloseableIterable<Record> records = IcebergGenerics.read(table).build()) {
        for (Record r : records) {
          Map<String, Object> row = new LinkedHashMap<>();
          for (Types.NestedField f : table.schema().columns()) {
            row.put(f.name(), value(r.getField(f.name())));
          }
          rows.add(row);
        }
      }
      out.append(json.writeValueAsString(rows)).append('\n');
    }
    System.out.print(out);
  }

  private static Object value(Object v) {
    if (v == null || v instanceof Integer || v instanceof Boolean || v instanceof String) {
      return v;
    }
    if (v instanceof Float || v instanceof Double) {
      return v;
    }
    if (v instanceof Long || v instanceof BigDecimal) {
      return v.toString();
    }
    if (v instanceof ByteBuffer) {
      ByteBuffer b = ((ByteBuffer) v).duplicate();
      byte[] bytes = new byte[b.remaining()];
      b.get(bytes);
      return Base64.getEncoder().encodeToString(bytes);
    }
    if (v instanceof byte[]) {
      return Base64.getEncoder().encodeToString((byte[]) v);
    }
    return v.toString(); // LocalDate, LocalTime, LocalDateTime, OffsetDateTime, UUID
  }
}
