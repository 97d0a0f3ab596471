// Entry point of the dev metastore: Derby's schema auto-creation skips the
// transaction/lock tables, so create them first (without hive.in.test, which
// rejects lock requests that carry no operation type), then run the server.
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.txn.TxnDbUtil;

public class TributaryMetastore {
  public static void main(String[] args) throws Throwable {
    HiveConf conf = new HiveConf();
    try {
      TxnDbUtil.prepDb(conf);
    } catch (Exception e) {
      // Already created by an earlier start of the same Derby database.
      if (!String.valueOf(e.getMessage()).contains("already exists")) {
        System.err.println("prepDb: " + e);
      }
    }
    HiveMetaStore.main(args);
  }
}
