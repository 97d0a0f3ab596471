// Test helper for the real HBase (dev/services hbase): the HBase sink never
// creates tables, and our Thrift2 client has no scan, so tests create tables
// and read them back through HBase's own Java client.
//
//   java -cp <conf>:<libs>/*:<classes> tributary.TributaryHBase create <table> <family>...
//   java -cp … tributary.TributaryHBase scan <table>
//
// `create` takes (table, family) pairs and creates the missing ones (and
// their namespaces, for `ns:table` names); `scan`
// prints one JSON line per row: {"row": hex, "cells": [[family:qualifier
// hex, timestamp, value hex], …]} with the visible (newest) cell versions.
package tributary;

import java.util.HexFormat;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.Cell;
import org.apache.hadoop.hbase.CellUtil;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.NamespaceDescriptor;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.Result;
import org.apache.hadoop.hbase.client.ResultScanner;
import org.apache.hadoop.hbase.client.Scan;
import org.apache.hadoop.hbase.client.Table;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;

public final class TributaryHBase {
  public static void main(String[] args) throws Exception {
    Configuration conf = HBaseConfiguration.create();
    HexFormat hex = HexFormat.of();
    try (Connection c = ConnectionFactory.createConnection(conf)) {
      switch (args[0]) {
        case "create":
          try (Admin admin = c.getAdmin()) {
            for (int i = 1; i + 1 < args.length; i += 2) {
              TableName name = TableName.valueOf(args[i]);
              String ns = name.getNamespaceAsString();
              boolean nsExists = java.util.Arrays.stream(admin.listNamespaces()).anyMatch(ns::equals);
              if (!nsExists) {
                admin.createNamespace(NamespaceDescriptor.create(ns).build());
              }
              if (!admin.tableExists(name)) {
                admin.createTable(
                    TableDescriptorBuilder.newBuilder(name)
                        .setColumnFamily(ColumnFamilyDescriptorBuilder.of(args[i + 1]))
                        .build());
              }
            }
          }
          break;
        case "scan":
          StringBuilder out = new StringBuilder();
          try (Table t = c.getTable(TableName.valueOf(args[1]));
              ResultScanner rows = t.getScanner(new Scan())) {
            for (Result r : rows) {
              out.append("{\"row\":\"").append(hex.formatHex(r.getRow())).append("\",\"cells\":[");
              boolean first = true;
              for (Cell cell : r.rawCells()) {
                if (!first) out.append(',');
                first = false;
                byte[] column =
                    (new String(CellUtil.cloneFamily(cell), "UTF-8") + ":"
                            + new String(CellUtil.cloneQualifier(cell), "UTF-8"))
                        .getBytes("UTF-8");
                out.append("[\"").append(hex.formatHex(column)).append("\",")
                    .append(cell.getTimestamp()).append(",\"")
                    .append(hex.formatHex(CellUtil.cloneValue(cell))).append("\"]");
              }
              out.append("]}\n");
            }
          }
          System.out.print(out);
          break;
        default:
          System.err.println("usage: TributaryHBase create <table> <family>... | scan <table>");
          System.exit(2);
      }
    }
  }
}
